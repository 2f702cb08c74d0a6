"""`msrn train` and examples/train_voc.py: options generated from TrainConfig, the same in both."""

import argparse
import dataclasses

import pytest

from msrn.cli import build_parser
from msrn.cli import train as train_command
from msrn.engine import TrainConfig, cpu_config, paper_config


def _train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"]


def _options(parser: argparse.ArgumentParser) -> dict:
    return {s: action.dest for action in parser._actions for s in action.option_strings}


def test_every_field_is_an_option_in_its_group():
    parser = _train_parser()
    options = _options(parser)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        assert options.get(flag, options.get(flag.replace("--", "--no-", 1))) == field.name, field.name
        assert field.metadata["group"] in ("data", "model", "recipe", "execution")
    groups = [group.title for group in parser._action_groups if group._group_actions]
    assert groups[-4:] == ["data", "model", "recipe", "execution"]
    assert {"--pretrained", "--no-pretrained", "--no-progress"} <= set(options)


def test_example_has_the_same_options(monkeypatch):
    seen = {}

    def capture(args):
        seen["args"] = args
        return 0

    monkeypatch.setattr(train_command, "run", capture)
    assert train_command.main([]) == 0
    standalone = argparse.ArgumentParser()
    train_command.add_train_arguments(standalone)
    assert set(_options(standalone)) == set(_options(_train_parser()))


def _config(argv):
    parser = argparse.ArgumentParser()
    train_command.add_train_arguments(parser)
    return train_command.config_from_args(parser.parse_args(argv))


def test_profiles_and_conversions():
    assert _config([]) == cpu_config()
    assert _config(["--data", "voc"]) == paper_config(data="voc")
    config = _config(
        [
            "--lr-steps",
            "--crop-scales",
            "1",
            "0.5",
            "--backbone-kwargs",
            '{"stem_width": 8}',
            "--no-pretrained",
            "--no-progress",
            "--amp",
            "bf16",
            "--epochs",
            "3",
        ]
    )
    assert config.lr_steps == () and config.crop_scales == (1.0, 0.5)
    assert config.backbone_kwargs == {"stem_width": 8}
    assert config.pretrained is False and config.progress is False
    assert config.amp == "bf16" and config.epochs == 3


def test_user_errors_are_one_line(capsys):
    parser = argparse.ArgumentParser()
    train_command.add_train_arguments(parser)
    args = parser.parse_args(["--epochs", "0"])
    assert train_command.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("msrn train: error: --epochs must be >= 1") and "Traceback" not in err
    with pytest.raises(SystemExit):
        parser.parse_args(["--amp", "fp8"])
