"""Loader: seeded order per epoch, batch-seeded augmentation identical for any num_workers, sharding, resume."""
import pytest
import torch

from reprlab.data import DataError, ImageDataset, cache, from_csv, from_folder
from reprlab.loaders import Loader, augment_batch, make_loaders
from reprlab.testing import make_image_folder


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("l") / "f", classes=("a", "b", "c"), n=7, size=12)
    return cache(from_folder(root))


def noise(x, gen):
    return x + torch.rand(x.shape, generator=gen)


def _epoch(dl, e):
    dl.set_epoch(e)
    return [b for b in dl]


def test_each_sample_once_per_epoch_and_order_changes(ds):
    dl = Loader(ds, batch_size=4, shuffle=True, seed=0)
    e0, e1 = (torch.cat([b["index"] for b in _epoch(dl, e)]) for e in (0, 1))
    assert sorted(e0.tolist()) == list(range(21)) == sorted(e1.tolist())
    assert not torch.equal(e0, e1)
    assert torch.equal(e0, torch.cat([b["index"] for b in _epoch(Loader(ds, batch_size=4, shuffle=True, seed=0), 0)]))
    assert not torch.equal(e0, torch.cat([b["index"] for b in _epoch(Loader(ds, batch_size=4, shuffle=True, seed=1), 0)]))


def test_epoch_advances_after_a_full_pass(ds):
    dl = Loader(ds, batch_size=8, shuffle=True)
    a = torch.cat([b["index"] for b in dl]); b = torch.cat([b["index"] for b in dl])
    assert dl.epoch == 2 and not torch.equal(a, b)


def test_labels_and_images_follow_index(ds):
    for b in Loader(ds, batch_size=5, shuffle=True, num_workers=2):
        assert torch.equal(b["label"], torch.from_numpy(ds.labels)[b["index"]])
        assert torch.equal(b["image"], ds.images[b["index"]].float() / 255)
        assert b["path"] == [ds.paths[i] for i in b["index"]]


@pytest.mark.parametrize("workers", [1, 2])
def test_same_numbers_whatever_num_workers(ds, workers):
    ref = _epoch(Loader(ds, batch_size=4, shuffle=True, transform=noise, seed=7), 3)
    got = _epoch(Loader(ds, batch_size=4, shuffle=True, transform=noise, seed=7, num_workers=workers), 3)
    assert len(ref) == len(got) == 6
    for r, g in zip(ref, got):
        assert torch.equal(r["index"], g["index"]) and torch.equal(r["image"], g["image"])


def test_real_augmentation_same_whatever_num_workers(ds):
    from reprlab.transforms import basic_augment
    t = basic_augment(12)
    ref = _epoch(Loader(ds, batch_size=8, shuffle=True, transform=t, seed=1), 2)
    got = _epoch(Loader(ds, batch_size=8, shuffle=True, transform=t, seed=1, num_workers=2), 2)
    for r, g in zip(ref, got): assert torch.equal(r["image"], g["image"])
    other = _epoch(Loader(ds, batch_size=8, shuffle=True, transform=t, seed=1), 3)
    assert not torch.equal(ref[0]["image"], other[0]["image"])


def test_augment_on_device_equals_worker(ds):
    a = _epoch(Loader(ds, batch_size=4, shuffle=True, transform=noise, augment_on="device"), 1)
    b = _epoch(Loader(ds, batch_size=4, shuffle=True, transform=noise, augment_on="worker", num_workers=2), 1)
    for x, y in zip(a, b): assert torch.equal(x["image"], y["image"])


def test_persistent_workers_serve_several_epochs(ds):
    dl = Loader(ds, batch_size=4, shuffle=True, transform=noise, num_workers=2)
    ref = Loader(ds, batch_size=4, shuffle=True, transform=noise)
    for e in range(3):
        for x, y in zip(_epoch(dl, e), _epoch(ref, e)): assert torch.equal(x["image"], y["image"])


def test_uncached_decoding_in_workers_equals_cache(ds):
    files = from_folder(ds.root)
    a = _epoch(Loader(files, batch_size=4, shuffle=True, num_workers=2), 0)
    b = _epoch(Loader(ds, batch_size=4, shuffle=True), 0)
    for x, y in zip(a, b): assert torch.equal(x["image"], y["image"]) and torch.equal(x["index"], y["index"])


def test_extras_travel_with_workers(ds, tmp_path):
    rows = "".join(f"{p.split('/f/')[1]},{ds.classes[l]},id{i % 3}\n" for i, (p, l) in enumerate(zip(ds.paths, ds.labels)))
    (tmp_path / "x.csv").write_text("path,label,identity\n" + rows)
    d = from_csv(tmp_path / "x.csv", ds.root)
    for b in Loader(d, batch_size=6, num_workers=2):
        assert b["identity"] == [f"id{int(i) % 3}" for i in b["index"]]


def test_resume_mid_epoch(ds):
    dl = Loader(ds, batch_size=4, shuffle=True, transform=noise)
    full = _epoch(dl, 5)
    dl.set_epoch(5, start_batch=2)
    rest = list(dl)
    assert len(rest) == len(full) - 2
    for x, y in zip(rest, full[2:]): assert torch.equal(x["image"], y["image"])


def test_sharding_like_distributed_sampler(ds):
    shards = [torch.cat([b["index"] for b in _epoch(Loader(ds, batch_size=3, shuffle=True, rank=r, world_size=2), 4)])
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 11
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(21))
    assert len(Loader(ds, batch_size=3, rank=1, world_size=2)) == 4


def test_drop_last_and_lengths(ds):
    assert [len(b["index"]) for b in Loader(ds, batch_size=8)] == [8, 8, 5]
    assert [len(b["index"]) for b in Loader(ds, batch_size=8, drop_last=True)] == [8, 8]
    dls = make_loaders(ds, ds, batch_size=8)
    assert len(dls.train) == 2 and len(dls.valid) == 3 and dls.valid.shuffle is False


def test_multiview_transform_gives_list(ds):
    two = lambda x, gen: [noise(x, gen), noise(x, gen)]
    b = next(iter(Loader(ds, batch_size=4, transform=two)))
    assert isinstance(b["image"], list) and len(b["image"]) == 2 and not torch.equal(*b["image"])


def test_bad_arguments(ds, tmp_path):
    with pytest.raises(ValueError, match="batch_size"): Loader(ds, batch_size=0)
    with pytest.raises(ValueError, match="augment_on"): Loader(ds, augment_on="gpu")
    with pytest.raises(ValueError, match="rank"): Loader(ds, rank=2, world_size=2)
    with pytest.raises(DataError, match="empty"): Loader(ImageDataset([], name="nothing"))
    root = make_image_folder(tmp_path / "s", classes=("a",), n=1, size=8)
    make_image_folder(tmp_path / "s", classes=("b",), n=1, size=10)
    with pytest.raises(DataError, match="size="): list(Loader(from_folder(root), batch_size=2))


def test_augment_batch_seeded():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(augment_batch(x, noise, 0, 1, 2), augment_batch(x, noise, 0, 1, 2))
    assert not torch.equal(augment_batch(x, noise, 0, 1, 2), augment_batch(x, noise, 0, 1, 3))
    assert torch.equal(augment_batch(x, None, 0, 0, 0), x.float() / 255)


def test_ranks_draw_different_augmentations(ds):
    a, b = (next(iter(Loader(ds, batch_size=4, transform=lambda x, gen: torch.rand(x.shape, generator=gen),
                             rank=r, world_size=2)))["image"] for r in range(2))
    assert not torch.equal(a, b)
