"""``ovperc demo``: options, and what it hands to the launcher."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

import ovperc
from ovperc.cli import demo as demo_cli
from tests.demo.conftest import make_pipeline


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ovperc")
    demo_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


def test_defaults_are_local_and_private():
    args = _parse([])
    assert (args.host, args.port, args.share, args.preset) == ("127.0.0.1", 7860, False, "default")
    assert args.concurrency_limit == 1 and args.max_classes == 1000


def test_model_options_reach_the_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    built: dict[str, Any] = {}
    launched: dict[str, Any] = {}

    def fake_preset(name: str, **kwargs: Any) -> ovperc.Pipeline:
        built.update(name=name, **kwargs)
        return make_pipeline()

    monkeypatch.setattr(ovperc.Pipeline, "from_preset", staticmethod(fake_preset))
    monkeypatch.setattr("ovperc.demo.launch", lambda pipeline, **kw: launched.update(kw))
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    args = _parse(["--host", "0.0.0.0", "--port", "7999", "--share", "--preset", "detect",
                   "--detector", "./my-gdino", "--device", "cpu", "--box-threshold", "0.4",
                   "--classifier-mode", "reject", "--nms", "agnostic", "--examples", str(tmp_path),
                   "--max-classes", "50"])
    assert demo_cli.run(args) == 0
    assert built["name"] == "detect" and built["detector"] == "./my-gdino"
    assert built["device"] == "cpu" and built["segmenter"] is None
    assert built["options"] == {"detector": {"box_threshold": 0.4}}
    assert built["nms"] == "agnostic"
    assert (launched["host"], launched["port"], launched["share"]) == ("0.0.0.0", 7999, True)
    assert launched["examples"] == [tmp_path / "a.png"]
    assert launched["limits"].max_classes == 50


def test_unloadable_model_is_an_error_message(monkeypatch: pytest.MonkeyPatch, capsys):
    def broken(name: str, **kwargs: Any) -> ovperc.Pipeline:
        raise ValueError("unknown preset 'nope'")

    monkeypatch.setattr(ovperc.Pipeline, "from_preset", staticmethod(broken))
    assert demo_cli.run(_parse([])) == 2
    assert "ovperc demo: unknown preset 'nope'" in capsys.readouterr().err
    assert demo_cli.run(_parse(["--examples", "/no/such/folder"])) == 2


def test_demo_takes_the_same_model_options_as_label(monkeypatch: pytest.MonkeyPatch):
    built: dict[str, Any] = {}

    def fake_preset(name: str, **kwargs: Any) -> ovperc.Pipeline:
        built.update(name=name, **kwargs)
        return make_pipeline()

    monkeypatch.setattr(ovperc.Pipeline, "from_preset", staticmethod(fake_preset))
    monkeypatch.setattr("ovperc.demo.launch", lambda pipeline, **kw: None)
    args = _parse(["--classifier-mode", "reject", "--tag-threshold", "0.1", "--max-tags", "3",
                   "--dtype", "bfloat16"])
    assert demo_cli.run(args) == 0
    assert built["name"] == "default" and built["dtype"] == "bfloat16"
    assert built["options"] == {"classifier": {"mode": "reject"},
                                "tagger": {"threshold": 0.1, "top_k": 3}}
    with pytest.raises(SystemExit):
        _parse(["--box-threshold", "1.5"])


@pytest.mark.parametrize(("preset", "guide", "names"), [
    ("shapes-tiny", "shapes-tiny", [f"shapes_00{i}.png" for i in range(4)]),
    ("detect", "open-vocabulary", ["shapes.png", "house.png"]),
])
def test_examples_and_guide_follow_the_preset_models(monkeypatch: pytest.MonkeyPatch, capsys,
                                                     preset: str, guide: str, names: list[str]):
    launched: dict[str, Any] = {}
    monkeypatch.setattr(demo_cli, "load_stages", lambda pipeline: None)  # the page is the point
    monkeypatch.setattr("ovperc.demo.launch", lambda pipeline, **kw: launched.update(kw))
    assert demo_cli.run(_parse(["--preset", preset, "--device", "cpu"])) == 0
    assert launched["guide"].name == guide
    assert [Path(path).name for path, _ in launched["examples"]] == names
    assert all(Path(path).is_file() for path, _ in launched["examples"])
    err = capsys.readouterr().err
    assert ("These toy models know only: red circle, blue square" in err) == (guide == "shapes-tiny")
