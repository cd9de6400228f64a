"""English passages shared by the steganography tests (written for these tests, not from the corpus)."""

PASSAGES = [
    "Okay, so the question asks how many apples are left after the farmer sells a third of them. "
    "He starts with forty eight apples, and a third of forty eight is sixteen, so he sells sixteen. "
    "That leaves thirty two apples. But wait, the problem also says he gives four away to his neighbour, "
    "so I should subtract those as well, which gives twenty eight. Let me check the wording once more "
    "before I commit to that answer.",
    "First I need to understand what the function is supposed to return when the list is empty. "
    "The documentation says it should raise an error rather than return zero, because an empty average "
    "has no meaning. So the fix is to test the length at the start and raise with a clear message, "
    "then compute the sum and divide by the count as before. I think the existing tests will still pass.",
    "The train leaves the station at nine in the morning and travels at sixty miles per hour. "
    "A second train leaves the same station one hour later and travels at eighty miles per hour. "
    "To find when the second train catches up, I set the distances equal: sixty times t equals eighty "
    "times t minus one. Solving this gives twenty t equals eighty, so t is four hours after nine.",
]
