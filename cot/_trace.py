"""The ``Trace`` record: a prompt, the reasoning inside the think block, and the final answer text."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cot._answers import extract_answer
from cot._segment import Sentence, split_sentences

__all__ = ["Trace", "TraceError", "atomic_write_text", "load_trace"]

TRACE_VERSION = 1
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
THINK_END = "\n</think>\n\n"
"""What ends the reasoning in an R1-style completion, as DeepSeek-R1 writes it: a newline, the closing tag and a blank
line; the final answer text follows."""


class TraceError(ValueError):
    """A trace file or completion string that cannot be read as a trace."""


Message = dict[str, str]


@dataclass
class Trace:
    """A reasoning trace. Saved as JSON with a ``version`` field."""

    prompt: str | list[Message]
    """The user prompt, as plain text or as chat messages (``[{"role": "user", "content": ...}]``)."""
    cot: str
    """The reasoning inside the think block, without the ``<think>``/``</think>`` tags or surrounding blank lines."""
    answer_text: str | None = None
    """Everything the model wrote after ``</think>``; None when the trace has no closing tag."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form facts about the trace: source, model, sampling settings, the true answer (``gt_answer``) ..."""
    truncated: bool = False
    """True when the completion had no ``</think>``: the reasoning was cut off before the answer."""
    missing_open_tag: bool = False
    """True when the completion had no ``<think>`` (R1-style templates put it in the prompt)."""
    id: str = ""
    """A stable identifier; defaults to a hash of the prompt and the CoT."""
    version: int = TRACE_VERSION
    """Format version of the saved record."""

    def __post_init__(self) -> None:
        if not isinstance(self.cot, str):
            raise TraceError(f"trace 'cot' must be a string, got {type(self.cot).__name__}")
        if isinstance(self.prompt, list):
            for m in self.prompt:
                if not isinstance(m, dict) or "role" not in m or "content" not in m:
                    raise TraceError(
                        "trace 'prompt' messages must be objects with 'role' and 'content', "
                        f"got {m!r}; pass plain text or [{{'role': 'user', 'content': '...'}}]"
                    )
        elif not isinstance(self.prompt, str):
            raise TraceError(
                f"trace 'prompt' must be text or a list of chat messages, got {type(self.prompt)}"
            )
        checks = (
            ("answer_text", (str, type(None)), "text or null"),
            ("metadata", dict, "an object"),
            ("truncated", bool, "true or false"),
            ("missing_open_tag", bool, "true or false"),
            ("id", str, "text"),
        )
        for name, kind, want in checks:
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise TraceError(f"trace {name!r} must be {want}, got {type(value).__name__} {value!r:.60}")
        texts = [("cot", self.cot), ("answer_text", self.answer_text or ""), ("id", self.id)]
        if isinstance(self.prompt, str):
            texts.append(("prompt", self.prompt))
        else:
            texts += [(f"prompt[{i}].content", str(m["content"])) for i, m in enumerate(self.prompt)]
        texts.append(("metadata", json.dumps(self.metadata, ensure_ascii=False, default=str)))
        for name, text in texts:
            _check_unicode(name, text)
        if not self.id:
            self.id = self._content_id()

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_completion(
        cls,
        completion: str,
        prompt: str | list[Message] = "",
        *,
        metadata: dict[str, Any] | None = None,
        id: str = "",
    ) -> Trace:
        """Build a trace from a raw completion containing ``<think> ... </think>`` and a final answer.

        A missing opening tag is tolerated (R1-distill chat templates put ``<think>`` in the prompt); the reasoning
        then starts at the beginning. A missing closing tag marks the trace ``truncated`` and leaves
        ``answer_text`` None.
        """
        if not isinstance(completion, str):
            raise TraceError(f"a completion must be a string, got {type(completion).__name__}")
        open_at = completion.find(THINK_OPEN)
        missing_open = open_at == -1
        body_start = 0 if missing_open else open_at + len(THINK_OPEN)
        close_at = completion.find(THINK_CLOSE, body_start)
        if close_at == -1:
            cot, answer_text, truncated = completion[body_start:], None, True
        else:
            cot = completion[body_start:close_at]
            answer_text = completion[close_at + len(THINK_CLOSE) :].strip()
            truncated = False
        return cls(
            prompt=prompt,
            cot=cot.strip(),
            answer_text=answer_text,
            metadata=dict(metadata or {}),
            truncated=truncated,
            missing_open_tag=missing_open,
            id=id,
        )

    # -- views --------------------------------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """The prompt as chat messages."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [dict(m) for m in self.prompt]

    @property
    def answer(self) -> str | None:
        """The final answer: the last boxed answer after ``</think>``, else the last one inside the CoT, else None."""
        if self.answer_text is not None:
            found = extract_answer(self.answer_text)
            if found is not None:
                return found
        return extract_answer(self.cot)

    def sentences(self, *, min_chars: int = 0) -> list[Sentence]:
        """The CoT split into sentences (offsets into ``self.cot``)."""
        return split_sentences(self.cot, min_chars=min_chars)

    def _content_id(self) -> str:
        payload = json.dumps([self.prompt, self.cot], sort_keys=True, ensure_ascii=False)
        return "t" + hashlib.sha256(payload.encode()).hexdigest()[:12]

    # -- I/O ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "trace") -> Trace:
        if not isinstance(data, dict):
            raise TraceError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if "cot" not in data:
            raise TraceError(
                f"{source}: no 'cot' field; a trace needs 'prompt' and 'cot' (the reasoning text), or use "
                "Trace.from_completion for a raw '<think>...</think>' completion"
            )
        version = data.get("version", TRACE_VERSION)
        if isinstance(version, float) and version.is_integer():
            version = int(version)
        if isinstance(version, bool) or not isinstance(version, int):
            raise TraceError(f"{source}: trace 'version' must be an integer, got {version!r:.60}")
        if version > TRACE_VERSION:
            raise TraceError(
                f"{source}: trace version {version} is newer than this cotscope reads; upgrade cotscope"
            )
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known.setdefault("prompt", "")
        if known.get("id") is None:
            known["id"] = ""
        return cls(**known)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace as JSON, atomically (temp file, then rename); on one line for a ``.jsonl`` path."""
        path = Path(path)
        indent = None if path.suffix.lower() in (".jsonl", ".ndjson") else 2
        from cot._json import json_dumps  # strict JSON: an undefined number in the metadata is null, not NaN

        return atomic_write_text(path, json_dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        return load_trace(path)


def _check_unicode(name: str, text: str) -> None:
    """Refuse text that cannot be written as UTF-8: a lone surrogate (``\\ud800``) from a bad JSON escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TraceError(
            f"trace {name!r} holds a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not "
            "valid Unicode text; fix the program that wrote the file (or drop the character) and load it again"
        ) from None


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write a file all at once or not at all: ``write(tmp)`` fills a temporary file in the same folder, which is
    synced to disk, given the usual permissions (``0o666`` less the umask) and renamed over ``path``. On any error
    the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared like any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_trace(path: str | os.PathLike) -> Trace:
    """Read a trace from a file.

    Accepted: a cotscope trace JSON (``prompt``, ``cot``, ...), or a ``.jsonl`` file holding one such line; a
    thought-anchors ``base_solution.json`` (``prompt`` and ``solution``/``full_cot``; the prompt's trailing
    ``<think>`` is dropped, since the chat template opens the think block, and the original is kept as
    ``metadata["raw_prompt"]``); or a text file holding a raw completion with ``<think> ... </think>``.
    """
    p = Path(path)
    if not p.exists():
        raise TraceError(f"no such trace file: {p}")
    if p.is_dir():
        candidate = p / "base_solution.json"
        if candidate.exists():
            p = candidate
        else:
            raise TraceError(
                f"{p} is a folder; give a trace file (JSON or text), or a thought-anchors problem folder"
            )
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(
            f"{p} is not UTF-8 text ({exc.reason}); give a JSON trace or a text completion"
        ) from exc
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        lines = [line for line in raw.split("\n") if line.strip()]
        if len(lines) != 1:
            raise TraceError(
                f"{p} holds {len(lines)} JSON lines; a trace file holds one trace: save the one you want as "
                "its own .json file"
            )
        raw = lines[0]
    elif p.suffix.lower() != ".json":
        return Trace.from_completion(raw, metadata={"source": str(p)})
    data = _parse_json(raw, p)
    if isinstance(data, dict) and "cot" not in data and ("solution" in data or "full_cot" in data):
        return _from_thought_anchors(data, p)
    return Trace.from_dict(data, source=str(p))


def _parse_json(raw: str, p: Path) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TraceError(
            f"{p} is not valid JSON (line {exc.lineno}: {exc.msg}); fix the file or pass a .txt"
        ) from exc
    except RecursionError:
        raise TraceError(
            f"{p} nests JSON arrays or objects too deeply to be a trace; a trace is one object with 'prompt' "
            "and 'cot' (see docs/cot.md)"
        ) from None


def _from_thought_anchors(data: dict[str, Any], p: Path) -> Trace:
    prompt = data.get("prompt", "")
    if "full_cot" in data and isinstance(data["full_cot"], str) and data["full_cot"].startswith(prompt):
        completion = data["full_cot"][len(prompt) :]
    else:
        completion = data.get("solution", "")
    # The reference sends the prompt raw, ending in "Solution: \n<think>\n"; here it becomes a user message and the
    # chat template opens the think block, so a trailing tag would put a second <think> before the reasoning.
    if not isinstance(prompt, str):
        raise TraceError(f"{p}: 'prompt' must be text, got {type(prompt).__name__}")
    user = prompt
    if prompt.rstrip().endswith(THINK_OPEN):
        user = prompt.rstrip()[: -len(THINK_OPEN)].rstrip()
    metadata = {"source": str(p), "format": "thought-anchors"}
    if user != prompt:
        metadata["raw_prompt"] = prompt
    trace = Trace.from_completion(completion, prompt=user, metadata=metadata)
    problem = p.parent / "problem.json"
    if problem.exists():
        info = _parse_json(problem.read_text(encoding="utf-8"), problem)
        if not isinstance(info, dict):
            raise TraceError(f"{problem}: expected a JSON object with 'gt_answer', got {type(info).__name__}")
        trace.metadata["gt_answer"] = info.get("gt_answer")
        trace.metadata["problem"] = info.get("problem")
    if "answer" in data:
        trace.metadata["published_answer"] = data["answer"]
    return trace
