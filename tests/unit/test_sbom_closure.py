"""The pure parts of reading a closure and writing its document: when a closure read beside the
build is the closure of the roots the build names, and the one byte form of a document."""

from __future__ import annotations

import json

from dynix.nix import PathInfo
from dynix.sbom.closure import closes, set_up
from dynix.sbom.documents import CHUNK, to_bytes, to_chunks

S = "/nix/store/"


def info(name: str, *refs: str) -> PathInfo:
    return PathInfo(
        path=S + name, nar_hash="sha256-x", nar_size=1, references=[S + r for r in refs]
    )


APP, LIB, LIBC = "a-app", "b-lib", "c-libc"
CLOSURE = [info(APP, APP, LIB), info(LIB, LIBC), info(LIBC, LIBC)]


def test_the_closure_of_the_roots_closes():
    assert closes(CLOSURE, [S + APP])
    assert closes(CLOSURE[1:], [S + LIB])
    assert closes(CLOSURE, [S + APP, S + LIBC])  # a root reached from another


def test_a_root_missing_or_a_path_no_root_reaches_does_not():
    assert not closes(CLOSURE[1:], [S + APP])
    assert not closes(CLOSURE, [S + LIB])  # the app is more than LIB's closure
    assert not closes([*CLOSURE, info("d-other")], [S + APP])


def test_a_reference_outside_the_answer_does_not():
    assert not closes([info(APP, LIB)], [S + APP])


def test_a_store_is_set_up_once_nix_wrote_its_schema(tmp_path):
    assert set_up("")  # the system's store
    assert not set_up(str(tmp_path))
    db = tmp_path / "nix" / "var" / "nix" / "db"
    db.mkdir(parents=True)
    (db / "db.sqlite").write_bytes(b"")
    assert not set_up(str(tmp_path))
    (db / "schema").write_text("10")
    assert set_up(str(tmp_path))


DOC = {
    "bomFormat": "CycloneDX",
    "metadata": {"timestamp": "1970-01-01T00:00:00Z", "tools": {"components": [{"name": "d"}]}},
    "components": [{"bom-ref": S + APP, "name": "app é"}, {"bom-ref": S + LIB, "hashes": []}],
    "dependencies": [],
    "empty": {},
}


def test_a_document_is_written_a_component_a_line_and_reads_back():
    text = to_bytes(DOC).decode()
    assert json.loads(text) == DOC
    assert text.endswith("}\n") and "\n\n" not in text
    lines = text.splitlines()
    assert '    {"bom-ref":"/nix/store/a-app","name":"app é"},' in lines
    assert '    {"bom-ref":"/nix/store/b-lib","hashes":[]}' in lines
    assert '    "tools": {"components":[{"name":"d"}]}' in lines
    assert '  "dependencies": [],' in lines and '  "empty": {}' in lines


def test_the_same_document_gives_the_same_bytes_whatever_its_dicts_were_built_from():
    again = json.loads(json.dumps(DOC))
    assert to_bytes(again) == to_bytes(DOC)


def test_lists_given_as_iterators_are_written_as_the_lists_would_be():
    lazy = dict(DOC, components=iter(DOC["components"]), dependencies=iter([]))
    assert to_bytes(lazy) == to_bytes(DOC)


def test_a_document_is_made_as_its_pieces_are_written():
    made = 0

    def components():
        nonlocal made
        for i in range(20_000):
            made += 1
            yield {"bom-ref": f"/nix/store/{i:032d}-p", "name": "p"}

    pieces = to_chunks(dict(DOC, components=components()))
    first = next(pieces)
    assert 0 < made < 20_000  # the first piece is out before the last component is made
    assert CHUNK <= len(first) < CHUNK + 200
    rest = b"".join(pieces)
    listed = [{"bom-ref": f"/nix/store/{i:032d}-p", "name": "p"} for i in range(20_000)]
    assert first + rest == to_bytes(dict(DOC, components=listed))
