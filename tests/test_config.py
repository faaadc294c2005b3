"""Config: every supported type from the command line and JSON, nesting, precedence, save/load equality,
errors that name the key / value / file, help, `cli` exit codes, and hypothesis fuzzing of the parser."""
from __future__ import annotations  # annotations are strings: the module must resolve them itself

import json
import math
import os
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprlab.config import (ConfigError, cli, config_from_dict, config_to_dict, format_config, help_text,
                            load_config, opt, parse_config, save_config)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Aug:
    p: float = opt(0.5, "probability of each op")
    ops: list[str] = opt(["flip", "crop"], "augmentations, in order")


@dataclass
class Data:
    root: Path = opt(Path("data"), "image folder")
    size: int = opt(32, "image side")
    splits: tuple[int, ...] = opt((80, 20), "split sizes in percent")
    stats: Optional[list[float]] = opt(None, "channel means (none: computed)")
    aug: Aug = opt(Aug, "augmentation options")


@dataclass
class Optim:
    name: Literal["sgd", "adamw", "lars"] = opt("sgd", "optimiser")
    lr: float = opt(0.1, "learning rate")
    betas: tuple[float, float] = opt((0.9, 0.999), "Adam betas")


@dataclass
class Cfg:
    "A config covering every supported option type."
    name: str = opt("run", "run name")
    tag: Optional[str] = opt(None, "free-form tag")
    seed: int = opt(0, "random seed")
    epochs: Optional[int] = opt(None, "epochs (none: until early stopping)")
    scale: float = opt(1.0, "loss scale")
    amp: bool = opt(False, "mixed precision")
    sync: Optional[bool] = opt(None, "sync batch norm (none: auto)")
    depth: Literal[18, 34, 50] = opt(18, "resnet depth")
    mode: Literal["train", "eval"] = opt("train", "what to do")
    encoder: str = opt("resnet18", "encoder name", choices=["resnet18", "resnet50", "vit_tiny"])
    milestones: list[int] = opt([30, 60], "LR drop epochs")
    weights: list[float] = opt([], "class weights")
    classes: list[str] = opt(["cat", "dog"], "class names")
    shape: tuple[int, str, float] = opt((1, "a", 2.5), "a fixed-length tuple")
    size_or_name: Union[int, str] = opt(3, "an int, else a name")
    group_lrs: dict[str, float] = opt({"head": 0.1}, "per-group learning rates")
    out: Optional[Path] = opt(None, "output folder")
    optim: Optim = opt(Optim, "optimiser options")
    data: Data = opt(Data(size=64), "data options")  # the parent's default group differs from Data()


LEAVES = ["name", "tag", "seed", "epochs", "scale", "amp", "sync", "depth", "mode", "encoder", "milestones",
          "weights", "classes", "shape", "size_or_name", "group_lrs", "out", "optim.name", "optim.lr", "optim.betas",
          "data.root", "data.size", "data.splits", "data.stats", "data.aug.p", "data.aug.ops"]


@dataclass
class Checked:
    lr: float = opt(0.1, "must be positive")

    def __post_init__(self):
        if self.lr <= 0: raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class Required:
    data_dir: Path = opt(help="where the data is")
    epochs: int = opt(3, "epochs")


def p(*argv, cls=Cfg):
    return parse_config(cls, list(argv))


# ---------------------------------------------------------------------------------------------- types


def test_defaults_and_fresh_mutables():
    a, b = p(), Cfg()
    assert a == b and a.data.size == 64 and a.data.aug == Aug()
    a.milestones.append(90); a.data.aug.ops.append("x")
    assert Cfg().milestones == [30, 60] and Cfg().data.aug.ops == ["flip", "crop"]


@pytest.mark.parametrize("argv,attr,want", [
    (["--seed=7"], "seed", 7), (["--seed", "-3"], "seed", -3), (["--seed= 1_000 "], "seed", 1000),
    (["--scale=1e-3"], "scale", 1e-3), (["--scale", "-2"], "scale", -2.0), (["--scale=3"], "scale", 3.0),
    (["--name=a b=c"], "name", "a b=c"), (["--name="], "name", ""), (["--name", "-x"], "name", "-x"),
    (["--tag=null"], "tag", None), (["--tag=None"], "tag", None), (["--tag=x"], "tag", "x"),
    (["--epochs=none"], "epochs", None), (["--epochs=5"], "epochs", 5),
    (["--out=/tmp/o"], "out", Path("/tmp/o")), (["--out=none"], "out", None),
    (["--depth=34"], "depth", 34), (["--mode", "eval"], "mode", "eval"),
    (["--milestones=1,2, 3"], "milestones", [1, 2, 3]), (["--milestones=[4, 5]"], "milestones", [4, 5]),
    (["--milestones="], "milestones", []), (["--weights=0.5,2"], "weights", [0.5, 2.0]),
    (["--classes=a, b"], "classes", ["a", "b"]), (['--classes=["a,b", "c"]'], "classes", ["a,b", "c"]),
    (["--shape=2,x,0.5"], "shape", (2, "x", 0.5)), (['--shape=[2, "x", 1]'], "shape", (2, "x", 1.0)),
    (["--size_or_name=7"], "size_or_name", 7), (["--size_or_name=big"], "size_or_name", "big"),
    (['--group_lrs={"head": 1, "body": 0.5}'], "group_lrs", {"head": 1.0, "body": 0.5}),
    (["--encoder=vit_tiny"], "encoder", "vit_tiny"),
])
def test_each_type_from_the_command_line(argv, attr, want):
    got = getattr(p(*argv), attr)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("argv,want", [
    (["--amp"], True), (["--amp", "false"], False), (["--amp=0"], False), (["--amp=YES"], True),
    (["--amp=off"], False), (["--amp", "on"], True), (["--amp", "--seed=1"], True),
])
def test_bools(argv, want):
    assert p(*argv).amp is want


def test_optional_bool_flag():
    assert p("--sync").sync is True and p("--sync", "none").sync is None and p("--sync=no").sync is False


def test_nested_dotted_keys_and_hyphens():
    c = p("--optim.name=adamw", "--optim.betas=0.8,0.9", "--data.aug.p", "0.25", "--data.aug.ops=flip",
          "--data.stats=0.4,0.5,0.6", "--group-lrs={}", "--size-or-name", "x")
    assert c.optim == Optim(name="adamw", betas=(0.8, 0.9)) and c.group_lrs == {} and c.size_or_name == "x"
    assert c.data == Data(size=64, stats=[0.4, 0.5, 0.6], aug=Aug(p=0.25, ops=["flip"]))  # size kept from Cfg's default
    assert p("--data.splits=70,20,10").data.splits == (70, 20, 10)


def test_local_classes_with_string_annotations():
    @dataclass
    class G:
        x: int = 1

    @dataclass
    class C:
        g: G = opt(G, "a group defined in a function")

    assert parse_config(C, ["--g.x=2"]) == C(G(2))


# ------------------------------------------------------------------------------------- JSON + overrides


def test_json_then_overrides_in_any_order(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"seed": 5, "scale": 2, "optim": {"lr": 0.5, "name": "lars"}, "data.aug.p": 0.1}))
    for argv in (["--config", str(f), "--optim.lr=0.01"], [f"--optim.lr=0.01", f"--config={f}"]):
        c = p(*argv)
        assert (c.seed, c.scale, c.optim.lr, c.optim.name, c.data.aug.p) == (5, 2.0, 0.01, "lars", 0.1)
        assert c.data.size == 64 and c.data.aug.ops == ["flip", "crop"]


def test_round_trip_every_type(tmp_path):
    c = Cfg(name="x", tag="t", epochs=3, scale=0.1, amp=True, sync=False, depth=50, mode="eval", encoder="vit_tiny",
            milestones=[1], weights=[0.1, 0.2], classes=[], shape=(0, "", -1.5), size_or_name="3",
            group_lrs={"a": 1e-9}, out=Path("runs/a b"), optim=Optim("adamw", 3e-4, (0.5, 0.6)),
            data=Data(Path("/x/y"), 8, (1,), [0.1, 0.2, 0.3], Aug(0.0, ["a,b"])))
    path = save_config(c, tmp_path / "run" / "config.json")
    assert load_config(Cfg, path) == c
    assert config_from_dict(Cfg, config_to_dict(c)) == c
    assert os.listdir(path.parent) == ["config.json"]                              # the temp file is gone
    text = path.read_text()
    assert list(json.loads(text)) == sorted(json.loads(text)) and text.startswith('{\n  "amp"')
    d = config_to_dict(c)
    assert d["out"] == "runs/a b" and d["shape"] == [0, "", -1.5] and d["data"]["splits"] == [1]
    assert json.loads(json.dumps(d)) == d


def test_save_overwrites_atomically(tmp_path):
    f = save_config(Cfg(seed=1), tmp_path / "c.json")
    save_config(Cfg(seed=2), f)
    assert load_config(Cfg, f).seed == 2 and os.listdir(tmp_path) == ["c.json"]


def test_save_rejects_nan(tmp_path):
    with pytest.raises(ConfigError, match="c.json"): save_config(Cfg(scale=math.nan), tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_from_dict_accepts_python_values():
    c = config_from_dict(Cfg, {"out": Path("o"), "shape": (1, "b", 2), "data": Data(size=1)})
    assert c.out == Path("o") and c.shape == (1, "b", 2.0) and c.data == Data(size=1)


def test_format_config_lists_every_option_sorted():
    lines = format_config(Cfg()).splitlines()
    keys = [l.split(" = ")[0].strip() for l in lines]
    assert keys == sorted(LEAVES)
    assert any(l.split() == ["data.root", "=", '"data"'] for l in lines)
    assert any(l.split() == ["tag", "=", "null"] for l in lines)


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("argv,msg", [
    (["--batch_size=3"], "unknown option --batch_size"),
    (["--data.sise=3"], "did you mean --data.size"),
    (["--size=3"], "did you mean --data.size"),                       # same last segment, other group
    (["--optim.betaz=1,2"], "did you mean --optim.betas"),
    (["--sed=1"], "did you mean --seed"),
    (["--seed.x=1"], "unknown option --seed.x"),
    (["--seed=1.5"], "--seed: expected int (a whole number), got '1.5'"),
    (["--scale=fast"], "--scale: expected float, got 'fast'"),
    (["--scale=nan"], "finite"), (["--scale=inf"], "finite"), (["--scale=1e999"], "finite"),
    (["--amp=maybe"], "--amp: expected bool"),
    (["--depth=19"], "--depth: '19' is not one of 18, 34, 50"),
    (["--mode=evl"], "did you mean 'eval'"),
    (["--encoder=resnet19"], "--encoder: 'resnet19' is not one of"),
    (["--milestones=1,a"], "--milestones[1]: expected int (a whole number), got 'a'"),
    (["--milestones=[1,"], "--milestones: not valid JSON"),
    (["--shape=1,2"], "3 comma-separated items"),
    (["--group_lrs=a"], "a JSON object"),
    (['--group_lrs={"a": "b"}'], "--group_lrs['a']: expected float"),
    (["--data.root="], "non-empty path"),
    (["--epochs=x"], "--epochs: expected int|none"),
    (["--seed"], "--seed: missing value (expected int"),
    (["--seed", "--amp"], "--seed: missing value"),
    (["--seed=1", "--seed=2"], "--seed is given twice"),
    (["--data.aug.p=1", "--data.aug-p=1"], "unknown option"),
    (["--group-lrs={}", "--group_lrs={}"], "--group_lrs is given twice"),
    (["--config=a.json", "--config=b.json"], "--config is given twice"),
    (["--config"], "--config: missing value"), (["--config="], "--config: missing file name"),
    (["train"], "unexpected argument 'train'"), (["-x"], "unexpected argument '-x'"),
    (["--"], "unexpected argument '--'"), (["--=3"], "empty option name"),
    (["--amp", "yes", "extra"], "unexpected argument 'extra'"),
    (["--data=3"], "--data is a group of options"), (["--data.aug"], "--data.aug is a group of options"),
])
def test_command_line_errors(argv, msg):
    with pytest.raises(ConfigError) as e: p(*argv)
    assert msg in str(e.value), str(e.value)


def test_json_file_errors(tmp_path):
    def err(text, name="c.json"):
        f = tmp_path / name; f.write_text(text)
        with pytest.raises(ConfigError) as e: p(f"--config={f}")
        with pytest.raises(ConfigError) as e2: load_config(Cfg, f)
        assert name in str(e.value) and name in str(e2.value), (str(e.value), str(e2.value))
        return str(e.value)
    assert "not valid JSON (line 1" in err('{"seed": 1,}')
    assert "not valid JSON" in err("")
    assert "expected a JSON object" in err("[1, 2]")
    assert "option 'seed': expected int, got '1'" in err('{"seed": "1"}')
    assert "option 'seed': expected int, got True" in err('{"seed": true}')
    assert "option 'seed': expected int, got 1.0" in err('{"seed": 1.0}')
    assert "option 'scale': expected float" in err('{"scale": NaN}')
    assert "unknown option 'optim.lrr' (did you mean 'optim.lr'" in err('{"optim": {"lrr": 1}}')
    assert "did you mean 'data.size'" in err('{"size": 1}')
    assert "option 'optim' is a group of options" in err('{"optim": 3}')
    assert "key 'seed' appears twice" in err('{"seed": 1, "seed": 2}')
    assert "'data.size' is given twice" in err('{"data": {"size": 1}, "data.size": 2}')
    assert "option 'optim.betas': expected tuple[float, float]" in err('{"optim": {"betas": [1]}}')
    assert "option 'data.splits'[1]: expected int" in err('{"data": {"splits": [1, "x"]}}')
    assert "not valid JSON" in err('{"seed": ' + "1" * 5000 + "}")
    assert "nested too deeply" in err("[" * 50_000)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="bin.json"): p(f"--config={tmp_path / 'bin.json'}")
    for bad in (tmp_path / "missing.json", tmp_path):
        with pytest.raises(ConfigError, match="not found|not a regular file") as e: p("--config", str(bad))
        assert str(bad) in str(e.value)


def test_from_dict_errors():
    with pytest.raises(ConfigError, match="expected an object"): config_from_dict(Cfg, [1])
    with pytest.raises(ConfigError, match="option names must be strings"): config_from_dict(Cfg, {1: 2})
    with pytest.raises(ConfigError, match="did you mean 'milestones'"): config_from_dict(Cfg, {"milestone": [1]})
    with pytest.raises(ConfigError, match="'encoder': 'vgg' is not one of"): config_from_dict(Cfg, {"encoder": "vgg"})
    with pytest.raises(ConfigError, match="'depth': 18.0 is not one of"): config_from_dict(Cfg, {"depth": 18.0})


def test_post_init_and_required():
    assert parse_config(Checked, ["--lr=0.5"]).lr == 0.5
    with pytest.raises(ConfigError, match="invalid Checked: lr must be > 0, got -1.0"): parse_config(Checked, ["--lr=-1"])
    with pytest.raises(ConfigError, match="missing required option --data_dir"): parse_config(Required, [])
    assert parse_config(Required, ["--data-dir=d"]) == Required(Path("d"))
    assert "--data_dir path" in help_text(Required) and "(required)" in help_text(Required)


def test_programmer_errors_are_type_errors():
    @dataclass
    class HasConfig:
        config: str = "x"

    @dataclass
    class Unsupported:
        x: set[int] = opt(set(), "sets are not supported")

    with pytest.raises(TypeError, match="'config'"): parse_config(HasConfig, [])
    with pytest.raises(TypeError, match="unsupported type"): parse_config(Unsupported, [])
    with pytest.raises(TypeError, match="shlex.split"): parse_config(Cfg, "--seed=1")
    with pytest.raises(TypeError, match="dataclass"): parse_config(dict, [])
    with pytest.raises(TypeError, match="dataclass"): save_config(Cfg, "x.json")
    with pytest.raises(ValueError, match="not among choices"): opt("vgg", "bad default", choices=["resnet18"])


# ----------------------------------------------------------------------------------------- help and cli


def test_help_lists_every_option_with_default_and_help():
    h = help_text(Cfg, prog="s01-train.py")
    assert h.startswith("usage: s01-train.py") and "A config covering every supported option type." in h
    defaults = {k.strip(): v for k, v in (l.split(" = ", 1) for l in format_config(Cfg()).splitlines())}
    lines = h.splitlines()
    for key in LEAVES:
        i = next(i for i, l in enumerate(lines) if l.strip().startswith(f"--{key} "))
        text = lines[i] if "(default:" in lines[i] else lines[i + 1]       # long names put the help on the next line
        assert f"(default: {defaults[key].strip()})" in text, (key, text)
    assert "learning rate (default: 0.1)" in h and "--depth {18,34,50}" in h and "--epochs int|none" in h
    assert "data.aug options (augmentation options):" in h and "--config FILE" in h
    assert help_text(Cfg, description="Custom.").count("Custom.") == 1


def test_cli_help_exits_0(capsys):
    with pytest.raises(SystemExit) as e: cli(Cfg, ["--seed=1", "-h"], prog="train")
    assert e.value.code == 0
    out = capsys.readouterr()
    assert out.out.startswith("usage: train") and "--data.aug.ops" in out.out and out.err == ""


def test_cli_error_exits_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as e: cli(Cfg, ["--optim.lrr=3"], prog="train")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown option --optim.lrr (did you mean --optim.lr") and "Traceback" not in err
    assert cli(Cfg, ["--seed=4"]).seed == 4


# ----------------------------------------------------------------------------------------------- fuzzing

NONE_WORDS = {"none", "null"}
finite = st.floats(allow_nan=False, allow_infinity=False)
paths = st.text(min_size=1).map(Path)
cfgs = st.builds(
    Cfg, name=st.text(), tag=st.none() | st.text(), seed=st.integers(-2**70, 2**70), epochs=st.none() | st.integers(),
    scale=finite, amp=st.booleans(), sync=st.none() | st.booleans(), depth=st.sampled_from([18, 34, 50]),
    mode=st.sampled_from(["train", "eval"]), encoder=st.sampled_from(["resnet18", "resnet50", "vit_tiny"]),
    milestones=st.lists(st.integers()), weights=st.lists(finite), classes=st.lists(st.text()),
    shape=st.tuples(st.integers(), st.text(), finite), size_or_name=st.integers() | st.text(),
    group_lrs=st.dictionaries(st.text(), finite), out=st.none() | paths,
    optim=st.builds(Optim, name=st.sampled_from(["sgd", "adamw", "lars"]), lr=finite, betas=st.tuples(finite, finite)),
    data=st.builds(Data, root=paths, size=st.integers(), splits=st.lists(st.integers()).map(tuple),
                   stats=st.none() | st.lists(finite), aug=st.builds(Aug, p=finite, ops=st.lists(st.text()))))


@FUZZ
@given(cfg=cfgs)
def test_fuzz_round_trip_dict(cfg):
    assert config_from_dict(Cfg, config_to_dict(cfg)) == cfg
    assert config_from_dict(Cfg, json.loads(json.dumps(config_to_dict(cfg)))) == cfg


@settings(FUZZ, max_examples=40)  # each example fsyncs a file
@given(cfg=cfgs)
def test_fuzz_round_trip_file(cfg, tmp_path):
    assert load_config(Cfg, save_config(cfg, tmp_path / "config.json")) == cfg


def to_argv(cfg, prefix=""):
    "The command line that rebuilds `cfg` (JSON for containers, repr for floats, none for None)."
    out = []
    for f in fields(cfg):
        v, k = getattr(cfg, f.name), prefix + f.name
        if is_dataclass(v): out += to_argv(v, k + "."); continue
        if v is None: s = "none"
        elif isinstance(v, bool): s = str(v).lower()
        elif isinstance(v, (list, tuple, dict)): s = json.dumps(v if isinstance(v, dict) else list(v))
        else: s = repr(v) if isinstance(v, float) else str(v)
        out.append(f"--{k}={s}")
    return out


@FUZZ
@given(cfg=cfgs)
def test_fuzz_round_trip_command_line(cfg):
    # `none` is None for optional options, and "7" is an int for int|str: those values cannot be typed as strings
    if cfg.tag is not None and cfg.tag.strip().lower() in NONE_WORDS: cfg.tag = "x"
    if cfg.out is not None and str(cfg.out).strip().lower() in NONE_WORDS: cfg.out = Path("x")
    if isinstance(cfg.size_or_name, str): cfg.size_or_name = 3
    assert parse_config(Cfg, to_argv(cfg)) == cfg


def parses_or_config_error(argv):
    try: cfg = parse_config(Cfg, argv)
    except ConfigError as e:
        assert str(e)
        return None
    assert isinstance(cfg, Cfg)
    return cfg


@FUZZ
@given(argv=st.lists(st.text(), max_size=6))
def test_fuzz_arbitrary_text(argv):
    parses_or_config_error(argv)


@FUZZ
@given(argv=st.lists(st.text().map(lambda s: "--" + s), max_size=6))
def test_fuzz_arbitrary_options(argv):
    parses_or_config_error(argv)


def near_miss_keys():
    def mutate(k, i, c):
        i = i % (len(k) + 1)
        return k[:i] + c + k[i + 1:]
    known = st.sampled_from(LEAVES + ["config", "data", "optim", "data.aug", "help"])
    return st.one_of(known, known.map(lambda k: k.replace("_", "-")),
                     st.builds(mutate, known, st.integers(0, 20), st.text(max_size=2)), st.text(max_size=12))


TRICKY = ["", " ", "0", "1", "-1", "1.5", "1e999", "nan", "inf", "-inf", "none", "null", "true", "no", "[", "]", "[]", "{}",
          "[1, 2]", "[1.5]", '["a"]', "[[1]]", '{"a": 1}', '{"a": "b"}', "a,b", "1,2", "1,,2", ",", "18", "34", "eval",
          "sgd", "resnet18", "x" * 300, "9" * 5000, "[" * 3000, "\x00", "--", "=", "é", "/", "."]


@FUZZ
@given(data=st.data())
def test_fuzz_near_miss_argv(data, tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    if not good.exists(): good.write_text('{"seed": 3, "data": {"size": 8}}'); bad.write_text('{"seed": "x"}')
    values = st.sampled_from(TRICKY + [str(good), str(bad), str(tmp_path), str(tmp_path / "nope.json")]) | st.text(max_size=20)
    tok = st.one_of(st.tuples(near_miss_keys(), values).map(lambda kv: f"--{kv[0]}={kv[1]}"),
                    near_miss_keys().map(lambda k: f"--{k}"), values)
    argv = data.draw(st.lists(tok, max_size=8))
    cfg = parses_or_config_error(argv)
    if cfg is not None and f"--config={good}" in argv and not any(a.startswith(("--seed", "--data.size")) for a in argv):
        assert (cfg.seed, cfg.data.size) == (3, 8)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4), max_leaves=12)


@FUZZ
@given(d=st.dictionaries(near_miss_keys(), json_values, max_size=6) | json_values)
def test_fuzz_json_documents(d, tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(d))
    for load in (lambda: load_config(Cfg, f), lambda: config_from_dict(Cfg, d), lambda: parse_config(Cfg, [f"--config={f}"])):
        try: assert isinstance(load(), Cfg)
        except ConfigError as e: assert str(e)
