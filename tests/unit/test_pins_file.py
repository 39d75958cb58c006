"""The pins file read only (the standard library's parser) and read to edit (tomlkit) are the
same pins, with the same errors."""

from __future__ import annotations

import pytest

from conftest import PINS
from dynix.errors import DynixError
from dynix.pins import PinsFile


def test_read_and_load_give_the_same_pins():
    assert PinsFile.read(PINS).pins == PinsFile.load(PINS).pins


BAD = {
    "syntax": ('[vllm]\nkind = "pypi"\nurl = \n', ":3:"),
    "kind": ('[vllm]\nkind = "rpm"\nhash = "unresolved"\n', ":2: pin 'vllm': kind must be"),
    "table": ('vllm = "pypi"\n', ":1: pin 'vllm': must be a table"),
    "hash": (
        '[x]\nkind = "url"\nurl = "https://example.org/x"\nhash = "md5-abc"\n',
        ":4: pin 'x': 'hash' must be an SRI hash",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_the_same_error_either_way_and_left_as_it_was(tmp_path, case):
    text, expected = BAD[case]
    path = tmp_path / "pins.toml"
    path.write_text(text)
    errors = []
    for open_it in (PinsFile.read, PinsFile.load):
        with pytest.raises(DynixError) as caught:
            open_it(path)
        errors.append(str(caught.value))
        assert str(path) + expected in errors[-1]
    if case != "syntax":  # the two parsers word a syntax error each their own way
        assert errors[0] == errors[1]
    assert path.read_text() == text


def test_a_file_read_only_is_not_saved(tmp_path):
    path = tmp_path / "pins.toml"
    path.write_text(PINS.read_text())
    pins = PinsFile.read(path)
    with pytest.raises(TypeError):
        pins.save()
    assert path.read_text() == PINS.read_text()
