"""The data path: look-ahead prefetching, OOM back-off, device JPEG decoding and its fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from oodbench.backbones import load_backbone
from oodbench.data.images import Preprocess, resize_crop
from oodbench.data.manifest import Manifest, scan_image_folder
from oodbench.errors import BackboneError, ConfigError, DataError
from oodbench.features import extract as E
from oodbench.features.cache import Cache
from oodbench.features.distributed import balanced_chunk_size


@pytest.fixture(autouse=True)
def _fresh_verdicts(monkeypatch):
    monkeypatch.setattr(E, "_DECODE_VERDICTS", {})
    monkeypatch.setattr(E, "_JOINT_VERDICTS", {})


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_backbone("tiny-random")


@pytest.fixture
def val(standin_root) -> Manifest:
    return scan_image_folder(standin_root, "imagenet/val", "val")


def test_prefetcher_yields_every_batch_in_order_one_ahead():
    log = []
    loader = [(torch.full((2, 3), i), torch.tensor([i])) for i in range(4)]

    def transfer(b):
        log.append(f"copy{int(b[1])}")
        return b[0] * 10, b[1]

    got = []
    for x, idx in E.Prefetcher(loader, torch.device("cpu"), transfer):
        log.append(f"use{int(idx)}")
        got.append(int(x[0, 0]))
    assert got == [0, 10, 20, 30]
    # batch k+1 is already on its way when batch k is used
    assert log == ["copy0", "copy1", "use0", "copy2", "use1", "copy3", "use2", "use3"]


def test_prefetcher_of_empty_loader_yields_nothing():
    assert list(E.Prefetcher([], torch.device("cpu"), lambda b: b)) == []


def _oom_above(limit, calls):
    def fn(x):
        calls.append(len(x))
        if len(x) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return x * 2 + 1
    return fn


def test_backoff_halves_until_it_fits_and_keeps_the_size():
    calls: list[int] = []
    backoff = E.BatchBackoff(8)
    x = torch.arange(10.0).view(10, 1)
    out = backoff(_oom_above(3, calls), x)
    assert torch.equal(out, x * 2 + 1)
    assert backoff.size == 2
    assert calls[:3] == [8, 4, 2]
    calls.clear()
    assert torch.equal(backoff(_oom_above(3, calls), x[:5]), x[:5] * 2 + 1)
    assert calls == [2, 2, 1]  # no second round of failures


def test_backoff_gives_up_at_one_image_with_advice():
    with pytest.raises(BackboneError, match="one image per batch"):
        E.BatchBackoff(4)(_oom_above(0, []), torch.ones(4, 1))


def test_extraction_survives_oom_with_the_same_features(tiny, val, tmp_path, monkeypatch):
    ref = E.extract(tiny, val, ["global"], Cache(tmp_path / "a"), batch_size=8, workers=0)
    calls: list[int] = []

    def flaky(bb, x):
        calls.append(len(x))
        if len(x) > 3:
            raise torch.OutOfMemoryError("fake")
        return bb.encode_image(x)

    monkeypatch.setitem(E.KIND_ENCODERS, "global", (flaky, np.dtype(np.float32)))
    st = E.ExtractStats()
    got = E.extract(tiny, val, ["global"], Cache(tmp_path / "b"), batch_size=8, workers=0,
                    stats=st)
    assert st.batch_size == 2 and max(calls) == 8
    np.testing.assert_allclose(got["global"], ref["global"], rtol=0, atol=1e-5)


def test_chunks_of_an_interrupted_run_are_reused(tiny, val, tmp_path):
    full = E.extract(tiny, val, ["global"], Cache(tmp_path / "a"), batch_size=4, chunk_size=4,
                     workers=0)["global"]
    cache = Cache(tmp_path / "b")
    chunk_dir = cache.chunk_dir("images", E.feature_spec(tiny, val, "global"))
    chunk_dir.mkdir(parents=True)
    np.save(chunk_dir / "000000004-000000008.npy", np.full((4, 32), 7, np.float32))
    st = E.ExtractStats()
    got = E.extract(tiny, val, ["global"], cache, batch_size=4, chunk_size=4, workers=0, stats=st)
    assert st.chunks_reused == 1 and st.images_encoded == 8
    assert (got["global"][4:8] == 7).all()  # taken from the chunk file, not recomputed
    np.testing.assert_array_equal(got["global"][:4], full[:4])
    assert not chunk_dir.exists()


@pytest.mark.parametrize("width,height", [(420, 300), (300, 451)])
def test_resize_crop_on_device_matches_pil(width, height):
    rng = np.random.default_rng(0)
    arr = (rng.random((height // 2, width // 2, 3)) * 255).astype(np.uint8)
    arr = np.asarray(Image.fromarray(arr).resize((width, height), Image.BICUBIC))  # smooth content
    pp = Preprocess(resize=64, crop=56)
    ref = resize_crop(Image.fromarray(arr), pp).transpose(2, 0, 1).astype(int)
    got = E.resize_crop_tensor(torch.from_numpy(arr.transpose(2, 0, 1).copy()), pp).numpy()
    assert got.shape == ref.shape == (3, 56, 56)
    diff = np.abs(got.astype(int) - ref)
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_device_decode_agrees_with_reference_and_has_its_own_key(tiny, val, tmp_path):
    ref = E.extract(tiny, val, ["global"], Cache(tmp_path), workers=0)["global"]
    st = E.ExtractStats()
    got = E.extract(tiny, val, ["global"], Cache(tmp_path), workers=0, stats=st,
                    decode="device")["global"]
    assert st.decode == "device" and st.decode_check["ok"] and not st.hits["global"]
    assert st.decode_check["n"] == len(val)
    cos = (np.asarray(ref) * np.asarray(got)).sum(1)
    assert cos.min() > 0.999
    cpu_key = E.feature_spec(tiny, val, "global")
    dev_key = E.feature_spec(tiny, val, "global", "device")
    assert "decode" not in cpu_key and dev_key["decode"]["mode"] == "device"


def test_failed_decode_check_falls_back_to_the_cpu_reader(tiny, val, tmp_path, monkeypatch):
    ref = E.extract(tiny, val, ["global"], Cache(tmp_path / "a"), workers=0)["global"]
    monkeypatch.setattr(E, "resize_crop_tensor",
                        lambda img, pp: torch.zeros((3, pp.crop, pp.crop), dtype=torch.uint8))
    st = E.ExtractStats()
    got = E.extract(tiny, val, ["global"], Cache(tmp_path / "b"), workers=0, stats=st,
                    decode="device")["global"]
    assert not st.decode_check["ok"] and st.decode == "cpu"
    np.testing.assert_array_equal(got, ref)
    assert E.feature_spec(tiny, val, "global", "device") == E.feature_spec(tiny, val, "global")


def _mixed_root(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a.jpg", "b.png", "c.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    return Manifest("mixed", tmp_path, ("a.jpg", "b.png", "c.jpg"), (-1, -1, -1))


def test_device_decode_falls_back_per_file(tmp_path, monkeypatch):
    import torchvision.io as tvio

    m = _mixed_root(tmp_path)
    pp = Preprocess(resize=32, crop=32)
    real = tvio.decode_jpeg
    rejected = (tmp_path / "c.jpg").read_bytes()

    def picky(data, **kw):
        items = data if isinstance(data, list) else [data]
        if any(bytes(d.numpy()) == rejected for d in items):
            raise RuntimeError("fake nvjpeg: unsupported")
        return real(data, **kw)

    monkeypatch.setattr(tvio, "decode_jpeg", picky)
    ds = E.EncodedImageDataset(m, pp)
    items = [ds[i] for i in range(3)]
    assert [t.dim() for t, _ in items] == [1, 3, 1]  # PNG decoded by the CPU reader in the worker
    st = E.ExtractStats()
    images, index = E.decode_on_device(E.collate_encoded(items), m, pp, torch.device("cpu"), st)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    assert index.tolist() == [0, 1, 2] and st.decode_fallbacks == 1
    for i in (1, 2):  # the PNG and the rejected JPEG went through the reference path exactly
        ref = resize_crop(Image.open(m.absolute(i)).convert("RGB"), pp).transpose(2, 0, 1)
        np.testing.assert_array_equal(images[i].numpy(), ref)


def test_unreadable_jpeg_is_named(tmp_path):
    m = _mixed_root(tmp_path)
    (tmp_path / "a.jpg").write_bytes(E.JPEG_MAGIC + b"not really a jpeg")
    pp = Preprocess(resize=32, crop=32)
    batch = E.collate_encoded([E.EncodedImageDataset(m, pp)[i] for i in range(3)])
    with pytest.raises(DataError, match="a.jpg"):
        E.decode_on_device(batch, m, pp, torch.device("cpu"))


def test_unknown_decode_mode_is_refused(tiny, val, tmp_path):
    with pytest.raises(ConfigError, match="decode"):
        E.extract(tiny, val, ["global"], Cache(tmp_path), decode="nvjpeg")


def _counting(fn, calls, name):
    def wrapped(bb, x):
        calls.append(name)
        return fn(bb, x)
    return wrapped


def test_global_and_local_come_from_one_pass_with_the_same_bytes(tiny, val, tmp_path,
                                                                 monkeypatch):
    import oodbench.features.local  # noqa: F401  (registers the local kind and the joint pass)

    one = {k: E.extract(tiny, val, [k], Cache(tmp_path / k), batch_size=4, workers=0)[k]
           for k in ("global", "local")}
    calls: list[str] = []
    for k in ("global", "local"):
        enc, dtype = E.KIND_ENCODERS[k]
        monkeypatch.setitem(E.KIND_ENCODERS, k, (_counting(enc, calls, k), dtype))
    joint = E.JOINT_ENCODERS[("global", "local")]
    monkeypatch.setitem(E.JOINT_ENCODERS, ("global", "local"), _counting(joint, calls, "joint"))
    both = E.extract(tiny, val, ["global", "local"], Cache(tmp_path / "both"), batch_size=4,
                     workers=0)
    # the check on a sample of the first batch (each kind's own, then joint), then one pass a batch
    assert calls == ["global", "local", "joint", "joint", "joint", "joint"]
    for k in ("global", "local"):
        assert both[k].dtype == one[k].dtype
        np.testing.assert_array_equal(both[k], one[k])


def test_a_joint_pass_that_differs_is_not_used(tiny, val, tmp_path, monkeypatch):
    import oodbench.features.local  # noqa: F401

    ref = E.extract(tiny, val, ["global", "local"], Cache(tmp_path / "a"), batch_size=4,
                    workers=0)
    monkeypatch.setattr(E, "_JOINT_VERDICTS", {})  # forget that the real joint pass was checked
    calls: list[str] = []
    joint = E.JOINT_ENCODERS[("global", "local")]

    def off(bb, x):
        calls.append("joint")
        g, loc = joint(bb, x)
        return g + 1e-3, loc

    monkeypatch.setitem(E.JOINT_ENCODERS, ("global", "local"), off)
    got = E.extract(tiny, val, ["global", "local"], Cache(tmp_path / "b"), batch_size=4,
                    workers=0)
    assert calls == ["joint"]  # tried on a sample of the first batch only
    for k in ("global", "local"):
        np.testing.assert_array_equal(got[k], ref[k])


def test_loader_workers():
    assert E.loader_workers(None, 1) == 0  # one batch: a worker only costs its start-up
    assert E.loader_workers(3, 1) == 3
    assert 0 <= E.loader_workers(None, 100) <= 16
    assert E.default_workers(local_ranks=10_000) == 0
    with pytest.raises(ConfigError):
        E.loader_workers(-1, 5)


@pytest.mark.parametrize("n,world", [(50_000, 8), (10, 2), (12, 2), (85_640, 3)])
def test_balanced_chunks_keep_batches_aligned(n, world):
    c = balanced_chunk_size(n, 4096, 128, world)
    assert c % 128 == 0 and 128 <= c <= 4096
    assert balanced_chunk_size(n, 4096, 128, 1) == 4096


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_side_stream_and_nvjpeg_paths_match_the_cpu(tiny, val, tmp_path):
    ref = E.extract(tiny, val, ["global"], Cache(tmp_path / "a"), batch_size=4, workers=0)
    gpu = load_backbone("tiny-random", device="cuda")
    got = E.extract(gpu, val, ["global"], Cache(tmp_path / "b"), batch_size=4, workers=1)
    np.testing.assert_allclose(got["global"], ref["global"], atol=1e-4)
    st = E.ExtractStats()
    dev = E.extract(gpu, val, ["global"], Cache(tmp_path / "c"), batch_size=4, workers=1,
                    decode="device", stats=st)
    assert st.decode == "device" and st.decode_check["ok"]
    assert E.feature_spec(gpu, val, "global", "device")["decode"]["decoder"] == "nvjpeg"
    assert (np.asarray(dev["global"]) * np.asarray(ref["global"])).sum(1).min() > 0.99
