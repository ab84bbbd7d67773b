"""The 13 instrument classes and the parsing of user instrument lists."""

from __future__ import annotations

import pytest

from cusep.errors import CusepError
from cusep.instruments import (
    BY_CODE,
    CODES,
    INSTRUMENTS,
    InstrumentError,
    label_vector,
    parse_instrument,
    parse_instruments,
)


def test_the_thirteen_classes():
    assert CODES == ("vn", "va", "vc", "db", "fl", "ob", "cl", "bn", "sax", "tpt", "hn", "tbn",
                     "tba")
    assert len({i.name for i in INSTRUMENTS}) == 13
    for inst in INSTRUMENTS:
        assert BY_CODE[inst.code] is inst
        assert 0 <= inst.program <= 127
        assert 0 <= inst.low < inst.high <= 127
        assert inst.family in ("strings", "woodwinds", "brass")


@pytest.mark.parametrize(("given", "code"), [
    ("vn", "vn"), ("VN", "vn"), ("Vc", "vc"), ("  tba ", "tba"),
    ("violin", "vn"), ("VIOLA", "va"), ("Cello", "vc"), ("double bass", "db"),
    ("Double_Bass", "db"), ("double   bass", "db"), ("French Horn", "hn"), ("saxophone", "sax"),
])
def test_codes_and_names_in_any_case(given, code):
    assert parse_instrument(given) == code


@pytest.mark.parametrize(("alias", "code"), [
    ("horn", "hn"), ("contrabass", "db"), ("bass", "db"), ("doublebass", "db"),
    ("double-bass", "db"), ("french-horn", "hn"), ("alto sax", "sax"), ("Tenor Sax", "sax"),
    ("DoubleBass", "db"), ("Horn", "hn"),  # Solos folder names
])
def test_aliases(alias, code):
    assert parse_instrument(alias) == code


@pytest.mark.parametrize(("name", "suggestion"), [
    ("violn", "'vn' (violin)"),
    ("chello", "'vc' (cello)"),
    ("trumpt", "'tpt' (trumpet)"),
])
def test_unknown_name_suggests_the_closest(name, suggestion):
    with pytest.raises(InstrumentError) as info:
        parse_instrument(name)
    message = str(info.value)
    assert f"unknown instrument '{name}'" in message
    assert f"Did you mean {suggestion}?" in message
    assert "Valid codes: " + ", ".join(CODES) in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["piano", "qwerty"])
def test_unknown_name_without_a_close_match(name):
    with pytest.raises(CusepError) as info:  # InstrumentError is a user-facing CusepError
        parse_instrument(name)
    assert "Did you mean" not in str(info.value)
    assert "Valid codes" in str(info.value)


def test_parse_list_keeps_order():
    assert parse_instruments("vc, Violin,  fl ") == ("vc", "vn", "fl")
    assert parse_instruments(["double bass", "HN"]) == ("db", "hn")
    assert parse_instruments("vn,,va,") == ("vn", "va")


@pytest.mark.parametrize("spec", ["vn,violin", "VC,cello", ["horn", "hn"]])
def test_duplicates_rejected(spec):
    with pytest.raises(InstrumentError, match="listed twice"):
        parse_instruments(spec)


@pytest.mark.parametrize("spec", ["", " , ", []])
def test_empty_list_rejected(spec):
    with pytest.raises(InstrumentError, match="no instrument given"):
        parse_instruments(spec)


def test_unknown_in_a_list():
    with pytest.raises(InstrumentError, match="unknown instrument 'vilon'"):
        parse_instruments("vc,vilon")


def test_label_vector():
    vec = label_vector(("vn", "vc"))
    assert len(vec) == 13
    assert vec == [1.0, 0.0, 1.0] + [0.0] * 10
    assert label_vector([], CODES) == [0.0] * 13
    assert label_vector(["fl"], ("vn", "fl", "vc")) == [0.0, 1.0, 0.0]
    assert label_vector(["tba", "vn"]) == label_vector(["vn", "tba"])


def test_version_and_short_help(capsys):
    import cusep
    from cusep.cli import main

    for args in (["--version"], ["version"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code in (0, None)
        assert capsys.readouterr().out.strip() == f"cusep {cusep.__version__}"
    with pytest.raises(SystemExit):
        main(["-h"])
    out = capsys.readouterr().out
    assert "separate" in out and "Usage" in out
    with pytest.raises(SystemExit):
        main(["separate", "-h"])
    assert "--rest" in capsys.readouterr().out
