"""The bad-input corpus: every case gets one line naming the problem, exit code 2, no traceback,
and no existing file replaced. Cases run in-process through `vaekit.cli.main.main` (same code path as
the console script, without a Python start-up per case); test_cli.py runs a few as subprocesses."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, write_idx
from vaekit.cli.main import main
from vaekit.config import load_config
from vaekit.training.loop import train

PRECIOUS = b"precious: must survive a failed command"
Case = Callable[[Path, Path], tuple[list[str], str]]  # (tmp, run) -> (argv, expected fragment)


def _npy(tmp: Path, array: np.ndarray) -> str:
    np.save(tmp / "d.npy", array)
    return str(tmp / "d.npy")


def _write(tmp: Path, name: str, data: bytes | str) -> str:
    path = tmp / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _folder(tmp: Path, arrays: list[np.ndarray]) -> str:
    folder = tmp / "imgs"
    folder.mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i}.png")
    return str(folder)


def _idx(tmp: Path, mutate: Callable[[bytes], bytes]) -> str:
    good = write_idx(tmp / "ok.gz", np.zeros((4, 6, 6), dtype=np.uint8))
    raw = mutate(gzip.decompress(good.read_bytes()))
    return _write(tmp, "x-images-idx3-ubyte.gz", gzip.compress(raw))


def _mnist_dir(tmp: Path, corrupt: str | None, mode: str) -> str:
    folder = tmp / "mnist"
    folder.mkdir()
    for f in (REPO / "data" / "mnist").iterdir():
        shutil.copy(f, folder / f.name)
    if corrupt:
        data = (folder / corrupt).read_bytes()
        (folder / corrupt).write_bytes(data[: len(data) // 3] if mode == "truncate" else gzip.compress(b"\0" * 100))
    return str(folder)


def _copy_run(tmp: Path, run: Path) -> Path:
    dst = tmp / "run"
    shutil.copytree(run, dst)
    return dst


def _model_file(run: Path, tmp: Path, change: Callable[[Path], None]) -> str:
    dst = _copy_run(tmp, run)
    change(dst / "model")
    return str(dst)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x55
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _other_arch(model_dir: Path, tmp: Path) -> None:
    cfg = load_config(
        None,
        [
            "model.hidden=[8]",
            "model.latent_dim=3",
            "train.steps=1",
            "train.tensorboard=false",
            f"data.name={_npy(tmp, np.zeros((4, 28, 28), dtype=np.uint8))}",
        ],
    )
    other = train(cfg, tmp / "other", quiet=True)
    shutil.copy(other.run_dir / "model" / "model.safetensors", model_dir / "model.safetensors")


def _all_checkpoints_corrupt(run: Path, tmp: Path) -> str:
    dst = _copy_run(tmp, run)
    for ckpt in (dst / "checkpoints").iterdir():
        _truncate(ckpt)
    return str(dst)


U8 = np.uint8
CASES: dict[str, Case] = {
    # --- data files ---
    "npy with NaN": lambda t, r: (
        ["train", "--data", _npy(t, np.full((3, 4, 4), np.nan)), "--run-dir", f"{t}/o"],
        "NaN",
    ),
    "npy 2-d": lambda t, r: (["train", "--data", _npy(t, np.zeros((3, 4), U8)), "--run-dir", f"{t}/o"], "not images"),
    "npy empty": lambda t, r: (
        ["train", "--data", _npy(t, np.zeros((0, 4, 4), U8)), "--run-dir", f"{t}/o"],
        "holds no images",
    ),
    "npy strings": lambda t, r: (["train", "--data", _npy(t, np.array(["a"])), "--run-dir", f"{t}/o"], "not numeric"),
    "npy out of range": lambda t, r: (
        ["train", "--data", _npy(t, np.full((2, 4, 4), -3.0)), "--run-dir", f"{t}/o"],
        "use uint8 or floats",
    ),
    "npy 5-d": lambda t, r: (
        ["train", "--data", _npy(t, np.zeros((2, 1, 1, 4, 4), U8)), "--run-dir", f"{t}/o"],
        "not images",
    ),
    "npy corrupt": lambda t, r: (
        ["train", "--data", _write(t, "d.npy", b"\x93NUMPY garbage"), "--run-dir", f"{t}/o"],
        "not a readable .npy",
    ),
    "npz no images key": lambda t, r: (
        ["train", "--data", _npz(t, a=np.zeros((2, 4, 4), U8)), "--run-dir", f"{t}/o"],
        "no array named",
    ),
    "npz label mismatch": lambda t, r: (
        ["train", "--data", _npz(t, x=np.zeros((3, 4, 4), U8), y=np.arange(2)), "--run-dir", f"{t}/o"],
        "labels have shape",
    ),
    "npz corrupt": lambda t, r: (
        ["train", "--data", _write(t, "d.npz", b"PK\x03\x04 nope"), "--run-dir", f"{t}/o"],
        "not a readable .npz",
    ),
    "idx truncated": lambda t, r: (
        [
            "train",
            "--data",
            _write(t, "x-images-idx3-ubyte.gz", gzip.compress(b"\0\0\x08\x03")[:12]),
            "--run-dir",
            f"{t}/o",
        ],
        "truncated or not gzip",
    ),
    "idx wrong magic": lambda t, r: (
        ["train", "--data", _idx(t, lambda b: b"\x07\x07" + b[2:]), "--run-dir", f"{t}/o"],
        "bad magic",
    ),
    "idx size mismatch": lambda t, r: (
        ["train", "--data", _idx(t, lambda b: b[:-9]), "--run-dir", f"{t}/o"],
        "header says",
    ),
    "idx labels as images": lambda t, r: (
        ["train", "--data", str(write_idx(t / "l-idx1-ubyte.gz", np.arange(5, dtype=U8))), "--run-dir", f"{t}/o"],
        "not images",
    ),
    "png 16-bit": lambda t, r: (
        ["train", "--data", _folder(t, [np.full((4, 4), 999, np.uint16)]), "--run-dir", f"{t}/o"],
        "not 8-bit",
    ),
    "folder without images": lambda t, r: (
        ["train", "--data", str(_mkdir(t / "empty")), "--run-dir", f"{t}/o"],
        "holds no PNG or JPEG",
    ),
    "images of two sizes": lambda t, r: (
        ["train", "--data", _folder(t, [np.zeros((4, 4), U8), np.zeros((5, 5), U8)]), "--run-dir", f"{t}/o"],
        "differ in size",
    ),
    "corrupt png": lambda t, r: (
        ["train", "--data", _png_folder_with_junk(t), "--run-dir", f"{t}/o"],
        "not a readable image",
    ),
    "missing data file": lambda t, r: (["train", "--data", f"{t}/nope.npy", "--run-dir", f"{t}/o"], "not found"),
    "unknown data set": lambda t, r: (["eval", str(r), "--data", "mnist-typo"], "unknown data set 'mnist-typo'"),
    "builtin files missing": lambda t, r: (
        ["eval", str(r), "--data-dir", str(_mkdir(t / "e"))],
        "mnist not found; put",
    ),
    "builtin bad checksum": lambda t, r: (
        ["eval", str(r), "--data-dir", _mnist_dir(t, "t10k-labels-idx1-ubyte.gz", "x")],
        "fails its checksum",
    ),
    "builtin truncated": lambda t, r: (
        ["eval", str(r), "--data-dir", _mnist_dir(t, "t10k-images-idx3-ubyte.gz", "truncate")],
        "truncated or not gzip",
    ),
    "data of the wrong shape": lambda t, r: (
        ["eval", str(r), "--split", "train", "--data", _npy(t, np.zeros((3, 5, 5), U8))],
        "model expects",
    ),
    "user data has no test split": lambda t, r: (
        ["eval", str(r), "--data", _npy(t, np.zeros((3, 28, 28), U8)), "--split", "test"],
        "no test split",
    ),
    # --- configs ---
    "config unknown key": lambda t, r: (["train", _write(t, "c.yaml", "train: {epoch: 3}\n")], "valid keys: epochs"),
    "config unknown section": lambda t, r: (["train", _write(t, "c.yaml", "trainer: {}\n")], "valid keys: version"),
    "config wrong type": lambda t, r: (["train", _write(t, "c.yaml", "train: {epochs: ten}\n")], "must be an integer"),
    "config negative size": lambda t, r: (
        ["train", _write(t, "c.yaml", "model: {latent_dim: -3}\n")],
        "latent_dim must be >= 1",
    ),
    "config empty": lambda t, r: (["train", _write(t, "c.yaml", "")], "is empty"),
    "config yaml bomb": lambda t, r: (["train", _write(t, "c.yaml", _bomb())], "aliases"),
    "config bad yaml": lambda t, r: (["train", _write(t, "c.yaml", "train: [1, 2\n")], "not valid YAML"),
    "config a list": lambda t, r: (["train", _write(t, "c.yaml", "- 1\n")], "must be a mapping"),
    "config future version": lambda t, r: (
        ["train", _write(t, "c.yaml", "version: 7\n")],
        "version 7 is not supported",
    ),
    "config python tag": lambda t, r: (
        ["train", _write(t, "c.yaml", "!!python/object/apply:os.system [ls]\n")],
        "not valid YAML",
    ),
    "config binary junk": lambda t, r: (["train", _write(t, "c.yaml", b"\xff\xfe\x00junk")], "cannot read config"),
    "unknown preset": lambda t, r: (["train", "seeed"], "unknown preset 'seeed'"),
    "override without =": lambda t, r: (["train", "seed", "--set", "objective.beta"], "key.sub=value"),
    "override unknown key": lambda t, r: (["config", "seed", "--set", "optim.learning_rate=1"], "valid keys here: lr"),
    "override bad choice": lambda t, r: (["config", "seed", "--set", "model.activation=swish"], "valid: relu"),
    "override zero lr": lambda t, r: (["config", "seed", "--set", "optim.lr=0"], "optim.lr must be > 0"),
    # --- command-line arguments ---
    "unknown command": lambda t, r: (["trian"], "invalid choice"),
    "non-integer epochs": lambda t, r: (["train", "seed", "--epochs", "x"], "invalid int value"),
    "zero samples": lambda t, r: (["sample", str(r), "--n", "0"], "must be >= 1"),
    "bad split": lambda t, r: (["eval", str(r), "--split", "dev"], "invalid choice"),
    "traverse bad dims": lambda t, r: (["traverse", str(r), "--dims", "0,99"], "latent dimensions are 0.."),
    "traverse junk dims": lambda t, r: (["traverse", str(r), "--dims", "a,b"], "is not 'auto'"),
    "interpolate index out of range": lambda t, r: (["interpolate", str(r), "--to", "999999"], "out of range"),
    "decode wrong width": lambda t, r: (["decode", str(r), _npy(t, np.zeros((2, 9), np.float32))], "expected floats"),
    "decode NaN": lambda t, r: (["decode", str(r), _npy(t, np.full((2, 20), np.nan, np.float32))], "NaN"),
    "decode not npy": lambda t, r: (["decode", str(r), _write(t, "z.npy", "hello")], "not a readable .npy"),
    # --- checkpoints and models ---
    "model folder missing": lambda t, r: (["eval", f"{t}/no-run"], "config.json is missing"),
    "model truncated": lambda t, r: (
        ["eval", _model_file(r, t, lambda m: _truncate(m / "model.safetensors"))],
        "truncated",
    ),
    "model bit flip": lambda t, r: (["eval", _model_file(r, t, lambda m: _flip(m / "model.safetensors"))], "corrupt"),
    "model config not json": lambda t, r: (
        ["eval", _model_file(r, t, lambda m: (m / "config.json").write_text("{"))],
        "not valid JSON",
    ),
    "model config not vaekit": lambda t, r: (
        ["eval", _model_file(r, t, lambda m: (m / "config.json").write_text(json.dumps({"format": "other"})))],
        "not a vaekit model config",
    ),
    "model of another architecture": lambda t, r: (
        ["eval", _model_file(r, t, lambda m: _other_arch(m, t))],
        "does not belong",
    ),
    "resume a missing run": lambda t, r: (["train", "seed", "--run-dir", f"{t}/none", "--resume"], "does not exist"),
    "train over an existing run": lambda t, r: (
        ["train", "mlp", "--run-dir", str(_copy_run(t, r))],
        "already holds checkpoints",
    ),
    "resume with every checkpoint corrupt": lambda t, r: (
        ["train", "mlp", "--run-dir", _all_checkpoints_corrupt(r, t), "--resume"],
        "no readable checkpoint",
    ),
    # --- compressed files ---
    "vkz not a container": lambda t, r: (
        ["decompress", _write(t, "x.vkz", b"hello"), "-o", f"{t}/precious.out"],
        "not a vaekit compressed file",
    ),
    "vkz truncated": lambda t, r: (
        ["decompress", _vkz(t, r, lambda b: b[:-7]), "-o", f"{t}/precious.out"],
        "truncated",
    ),
    "vkz bit flip": lambda t, r: (["decompress", _vkz(t, r, _flip_byte), "-o", f"{t}/precious.out"], "corrupted"),
    "vkz trailing junk": lambda t, r: (
        ["decompress", _vkz(t, r, lambda b: b + b"junk"), "-o", f"{t}/precious.out"],
        "trailing bytes",
    ),
    "vkz future version": lambda t, r: (
        ["decompress", _vkz(t, r, lambda b: b[:4] + b"\x09\x00" + b[6:]), "-o", f"{t}/precious.out"],
        "container version 9",
    ),
    "vkz other model": lambda t, r: (
        ["decompress", _vkz(t, r, lambda b: b), "-o", f"{t}/precious.out", "--model", _other_model(t)],
        "another model",
    ),
    "vkz missing model": lambda t, r: (
        ["decompress", _vkz(t, r, lambda b: b), "-o", f"{t}/precious.out", "--model", f"{t}/gone"],
        "model folder",
    ),
    "compress 8-bit data with a binary model": lambda t, r: (
        [
            "compress",
            _npy(t, np.arange(2 * 28 * 28, dtype=U8).reshape(2, 28, 28) % 200),
            "--model",
            str(r),
            "-o",
            f"{t}/precious.out",
        ],
        "not binary",
    ),
    "compress float data": lambda t, r: (
        ["compress", _npy(t, np.zeros((2, 28, 28), np.float32)), "--model", str(r), "-o", f"{t}/precious.out"],
        "compress needs uint8 images",
    ),
    "compress wrong shape": lambda t, r: (
        ["compress", _npy(t, np.zeros((2, 5, 5), U8)), "--model", str(r), "-o", f"{t}/precious.out"],
        "model expects",
    ),
    "compress a JPEG folder": lambda t, r: (
        ["compress", _jpeg_folder(t), "--model", str(r), "-o", f"{t}/precious.out"],
        "only PNG folders",
    ),
}


def _vkz(tmp: Path, run: Path, mutate: Callable[[bytes], bytes]) -> str:
    from vaekit.apps.compress.files import compress_file

    np.save(tmp / "bin.npy", (np.arange(3 * 28 * 28).reshape(3, 28, 28) % 3 == 0).astype(U8) * 255)
    compress_file(run, tmp / "bin.npy", tmp / "good.vkz")
    return _write(tmp, "bad.vkz", mutate((tmp / "good.vkz").read_bytes()))


def _flip_byte(data: bytes) -> bytes:
    return data[:-5] + bytes([data[-5] ^ 0x10]) + data[-4:]


def _other_model(tmp: Path) -> str:
    from vaekit.models.vae import build_model

    model = build_model(load_config("mlp", ["model.hidden=[8]", "model.input_shape=[1, 28, 28]"]).model)
    model.save_pretrained(str(tmp / "other-model"))
    return str(tmp / "other-model")


def _jpeg_folder(tmp: Path) -> str:
    folder = _mkdir(tmp / "jpgs")
    Image.fromarray(np.zeros((28, 28), U8)).save(folder / "a.jpg")
    return str(folder)


def _npz(tmp: Path, **arrays: np.ndarray) -> str:
    np.savez(tmp / "d.npz", **arrays)  # type: ignore[arg-type]
    return str(tmp / "d.npz")


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _png_folder_with_junk(tmp: Path) -> str:
    folder = _folder(tmp, [np.zeros((4, 4), U8)])
    (Path(folder) / "z.png").write_bytes(b"\x89PNG junk")
    return folder


def _bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config("mlp", ["train.steps=5", "train.tensorboard=false", "train.samples=4"])
    return train(cfg, tmp_path_factory.mktemp("bad") / "run", quiet=True).run_dir


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_corpus_size() -> None:
    print(f"bad-input corpus: {len(CASES)} cases")
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(
    name: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv, fragment = CASES[name](tmp_path, run)
    output = tmp_path / "precious.out"
    output.write_bytes(PRECIOUS)
    if (
        argv[0] in ("sample", "interpolate", "traverse", "decode", "reconstruct", "latent-map", "score", "encode")
        and "-o" not in argv
    ):
        argv += ["-o", str(output)]
    before = _snapshot(run)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("vaekit: warning")]
    assert code == 2, (name, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and fragment in lines[0], (name, err)
    assert output.read_bytes() == PRECIOUS  # nothing replaced
    assert _snapshot(run) == before
    assert not (tmp_path / "o" / "model").exists()  # no half-made run
