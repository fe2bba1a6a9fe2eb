"""Checks of the Flutter client that need no Flutter SDK: every ``.dart`` file parses with
tree-sitter-dart (no ERROR or MISSING node), the protocol types cover every message in
``tests/vectors``, and the package declares what it is built on. ``flutter test`` (in
``flutter_client/``) runs the Dart unit and widget tests where an SDK exists."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "flutter_client"
VECTORS = REPO / "tests" / "vectors"
DART_FILES = sorted(PKG.rglob("*.dart"))


@pytest.fixture(scope="module")
def parser() -> Any:
    import tree_sitter
    import tree_sitter_dart

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_dart.language()))


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from _walk(child)


def test_there_is_a_flutter_package() -> None:
    assert (PKG / "pubspec.yaml").is_file()
    assert len(DART_FILES) >= 10, DART_FILES
    assert (PKG / "test").is_dir() and list((PKG / "test").glob("*_test.dart"))


@pytest.mark.parametrize("path", DART_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_dart_file_parses(parser: Any, path: Path) -> None:
    source = path.read_bytes()
    tree = parser.parse(source)
    bad = [n for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing]
    where = [
        f"{path.relative_to(REPO)}:{n.start_point[0] + 1}:{n.start_point[1] + 1} "
        f"{'MISSING' if n.is_missing else 'ERROR'} {source[n.start_byte:n.end_byte][:60]!r}"
        for n in bad[:10]
    ]
    assert not bad, "\n".join(where)


def test_the_parse_check_catches_broken_dart(parser: Any) -> None:
    """The check above would fail on a syntax error (so it is not vacuous)."""
    tree = parser.parse(b"class A { void f() { final x = ; } }")
    assert any(n.type == "ERROR" or n.is_missing for n in _walk(tree.root_node))


def _factory_body(source: str, cls: str) -> str:
    """The text of ``factory <cls>.fromJson(...)`` up to the next class declaration."""
    m = re.search(rf"factory {cls}\.fromJson\(.*?(?=\n(?:final |sealed |abstract )?class )",
                  source, re.S)
    assert m, f"no factory {cls}.fromJson"
    return m.group(0)


def _vector_types(prefix: str) -> set[str]:
    files = sorted(VECTORS.glob(f"{prefix}.*.json"))
    assert files, f"no {prefix} vectors in {VECTORS}"
    return {json.loads(f.read_text(encoding="utf-8"))["type"] for f in files}


def test_dart_protocol_covers_every_message_in_the_vectors() -> None:
    source = (PKG / "lib" / "src" / "protocol.dart").read_text(encoding="utf-8")
    for prefix, sealed in (("server", "ServerMessage"), ("client", "ClientMessage")):
        assert re.search(rf"\bsealed class {sealed}\b", source)
        body = _factory_body(source, sealed)
        handled = set(re.findall(r"^\s*'([a-z_]+)' =>", body, re.M))
        missing = _vector_types(prefix) - handled
        assert not missing, f"{sealed}.fromJson does not decode {sorted(missing)}"
        # Every handled type has its own final class whose `type` is that string.
        for t in handled:
            assert re.search(rf"String get type => '{t}';", source), t


def test_dart_binary_header_matches_the_vectors() -> None:
    vec = json.loads((VECTORS / "binary_header.json").read_text(encoding="utf-8"))
    source = (PKG / "lib" / "src" / "protocol.dart").read_text(encoding="utf-8")
    assert f"const int headerBytes = {vec['header_size']};" in source
    getters = {"u8": "getUint8", "u16": "getUint16", "u32": "getUint32", "f64": "getFloat64"}
    for field in vec["fields"]:
        call = getters[field["type"]]
        pattern = rf"{call}\({field['offset']}(, Endian\.little)?\)"
        assert re.search(pattern, source), f"{field['name']}: no {call}({field['offset']}...)"


def test_dart_patch_header_matches_the_vectors() -> None:
    """The Dart reader of mouth patches (variant C) reads the fields where the vectors put
    them (its behaviour is tested in test/protocol_test.dart against the same file)."""
    vec = json.loads((VECTORS / "binary_patch.json").read_text(encoding="utf-8"))
    source = (PKG / "lib" / "src" / "protocol.dart").read_text(encoding="utf-8")
    assert f"const int patchHeaderBytes = {vec['header_size']};" in source
    body = source[source.index("factory PatchFrame.decode"):]
    for call, offset in [("getUint32", 4), ("getFloat64", 8), ("getUint32", 16),
                         ("getUint16", 20), ("getUint16", 22), ("getUint16", 24),
                         ("getUint16", 26), ("getUint8", 28)]:
        assert re.search(rf"{call}\({offset}(, Endian\.little)?\)", body), (call, offset)
    tests = (PKG / "test" / "protocol_test.dart").read_text(encoding="utf-8")
    assert "loadVector('binary_patch.json')" in tests


def test_pubspec_declares_the_packages_the_client_uses() -> None:
    pubspec = (PKG / "pubspec.yaml").read_text(encoding="utf-8")
    for dep in ("video_player", "web_socket_channel", "flutter_pcm_sound", "flutter_test"):
        assert re.search(rf"^\s+{dep}:", pubspec, re.M), dep
    assert re.search(r'sdk: ">=3\.', pubspec), "Dart 3 (null safety) is required"
    # Each package imported by lib/ is declared.
    imported = set()
    for path in (PKG / "lib").rglob("*.dart"):
        imported |= set(re.findall(r"import 'package:([a-z_]+)/", path.read_text()))
    imported -= {"flutter", "lipcore_client"}
    for pkg in imported:
        assert re.search(rf"^\s+{pkg}:", pubspec, re.M), f"{pkg} is imported but not declared"


def test_dart_tests_read_the_shared_vectors() -> None:
    helper = (PKG / "test" / "vectors.dart").read_text(encoding="utf-8")
    assert "../tests/vectors" in helper
    assert (PKG / "../tests/vectors").resolve() == VECTORS.resolve()


def test_dart_session_recreates_a_lost_session_like_the_web_client() -> None:
    """No Dart SDK here: check the Flutter session's recovery against the web client's by
    their shared facts (the close codes that re-create, the re-said sentence)."""

    root = Path(__file__).resolve().parents[2]
    dart = (root / "flutter_client/lib/src/session.dart").read_text()
    js = (root / "src/lipcore/web/session.js").read_text()
    dart_codes = re.search(r"recreateCodes = <int>\{([^}]*)\}", dart)
    js_codes = re.search(r"RECREATE_CODES = new Set\(\[([^\]]*)\]\)", js)
    assert dart_codes and js_codes
    as_set = lambda m: {int(x) for x in m.group(1).split(",")}  # noqa: E731
    assert as_set(dart_codes) == as_set(js_codes) >= {1006, 1012, 4404}
    assert "unawaited(_recover(code))" in dart and "if (again != null) speak(again);" in dart
    example = (root / "flutter_client/example/lib/main.dart").read_text()
    assert "recreate: () => _api.createSession(" in example
