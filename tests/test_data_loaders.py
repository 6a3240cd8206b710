"""Edit loaders: DALI and Pillow agree, broken files are skipped and counted, shards are disjoint and covering.

DALI tests run wherever nvidia-dali imports and skip with the reason elsewhere. Agreement tolerances, in
uint8 levels, for the decoded and resized images of the two backends:
- at the native size: PNG exactly equal; JPEG within 2 (both use libjpeg-turbo's accurate integer IDCT, but
  builds may round differently);
- resized (antialiased bilinear): within 2 for PNG and 3 for JPEG away from the outermost row and column,
  and within 0.5 on average over the whole image. The outermost row and column may differ by up to ~20 when
  shrinking sharp edges: Pillow renormalises the filter where it overhangs the image, DALI repeats the edge
  pixel.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from editrl_engine.data import (
    EditLoader,
    EditRow,
    SkippedImageWarning,
    available_backends,
    dali_unavailable_reason,
    encoded_problem,
    group_key,
    make_decoder,
    make_tasks,
    measure_loader,
    read_manifest,
    shard_indices,
    write_manifest,
    write_synthetic,
    write_textured_images,
)

NATIVE = 48
RESIZES = [64, 32, (24, 40), (40, 56), 17]


def require_dali() -> None:
    reason = dali_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(params=["dali", "pillow"])
def backend(request) -> str:
    if request.param == "dali":
        require_dali()
    return request.param


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Synthetic shapes (sharp edges) and photo-like textures, each as PNG and JPEG, at 48 x 48."""
    root = tmp_path_factory.mktemp("loader-data")
    manifests = {}
    for image_format in ("png", "jpeg"):
        manifests["shapes", image_format] = write_synthetic(root / f"shapes-{image_format}", 12, seed=4, size=NATIVE,
                                                            image_format=image_format)
        manifests["textured", image_format] = write_textured_images(root / f"textured-{image_format}", 12,
                                                                    size=NATIVE, image_format=image_format)
    return manifests


def load_all(manifest, backend, size, **options) -> tuple[torch.Tensor, list[str]]:
    with EditLoader(manifest, batch_size=5, size=size, backend=backend, **options) as loader:
        batches = list(loader)
    return torch.cat([b.images for b in batches]), [row.id for b in batches for row in b.rows]


# ---- agreement ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["shapes", "textured"])
@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_dali_and_pillow_agree(folders, content, image_format):
    require_dali()
    manifest = folders[content, image_format]
    for size in [NATIVE, *RESIZES]:
        dali, dali_ids = load_all(manifest, "dali", size)
        pillow, pillow_ids = load_all(manifest, "pillow", size)
        height, width = (size, size) if isinstance(size, int) else size
        assert dali.shape == pillow.shape == (12, 3, height, width) and dali.dtype == pillow.dtype == torch.uint8
        assert dali_ids == pillow_ids
        difference = (dali.int() - pillow.int()).abs()                              # [N, 3, H, W]
        if size == NATIVE:
            assert difference.max() <= (0 if image_format == "png" else 2), size
        else:
            interior = difference[:, :, 1:-1, 1:-1]
            assert interior.max() <= (2 if image_format == "png" else 3), size
            assert difference.float().mean() <= 0.5, size


def test_png_decodes_to_the_exact_source_pixels(folders, backend):
    tasks = make_tasks(12, seed=4, size=NATIVE)
    images, ids = load_all(folders["shapes", "png"], backend, NATIVE)
    assert ids == [t.id for t in tasks]
    assert torch.equal(images, torch.stack([t.source_image() for t in tasks]))


def test_image_modes_and_exif_orientation_agree(tmp_path):
    """Grey, grey + alpha, RGBA, palette, 1-bit, 16-bit grey PNGs and an EXIF-rotated JPEG: both backends
    return the same RGB pixels at the native size (the JPEG within its tolerance)."""
    require_dali()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    grey16 = Image.fromarray(rng.integers(0, 65536, (20, 30), dtype=np.uint16))
    images = {"l.png": rgb.convert("L"), "la.png": rgb.convert("LA"), "rgba.png": rgb.convert("RGBA"),
              "p.png": rgb.convert("P"), "bits.png": rgb.convert("1"), "grey16.png": grey16}
    for name, image in images.items():
        image.save(tmp_path / name)
    exif = rgb.getexif()
    exif[0x0112] = 6                                                           # rotate 90 degrees clockwise
    rgb.save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    rows = [EditRow(id=name, source=tmp_path / name, instruction="-") for name in [*images, "rotated.jpg"]]
    decoded = {}
    for backend in ("dali", "pillow"):
        with EditLoader(rows[:-1], batch_size=8, size=(20, 30), backend=backend) as loader:
            decoded[backend, "png"] = next(iter(loader)).images
        with EditLoader(rows[-1:], batch_size=1, size=(30, 20), backend=backend) as loader:
            decoded[backend, "jpeg"] = next(iter(loader)).images
    assert torch.equal(decoded["dali", "png"], decoded["pillow", "png"])
    assert (decoded["dali", "jpeg"].int() - decoded["pillow", "jpeg"].int()).abs().max() <= 2
    grey = decoded["pillow", "png"][[0, 1, 4, 5]]                              # l, la, bits, grey16
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])


def test_targets_and_group_keys_come_with_the_batch(folders, backend):
    tasks = {t.id: t for t in make_tasks(12, seed=4, size=NATIVE)}
    with EditLoader(folders["shapes", "png"], batch_size=4, size=NATIVE, backend=backend, load_targets=True) as loader:
        for batch in loader:
            assert torch.equal(batch.targets, torch.stack([tasks[row.id].target_image() for row in batch.rows]))
            assert batch.group_keys == [group_key(row) for row in batch.rows]


def test_stopping_early_stops_the_prefetch_thread(folders, backend):
    with EditLoader(folders["textured", "jpeg"], batch_size=2, size=16, backend=backend, prefetch=2) as loader:
        batches = iter(loader)
        first = next(batches)
        batches.close()
        assert not [t for t in threading.enumerate() if t.name == "editrl-prefetch"]
        assert [row.id for row in next(iter(loader)).rows] == [row.id for row in first.rows]


# ---- broken files ------------------------------------------------------------------------------------------------
def broken_manifest(folder, source_manifest) -> tuple:
    """A manifest with 4 good images between a missing file and 4 kinds of broken file."""
    good = read_manifest(source_manifest)[:4]
    jpeg = next(r for r in read_manifest(source_manifest)).source.read_bytes()
    files = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "garbage.png": b"this is not an image" * 10,
        "empty.jpg": b"",
        # complete in structure (signature, then IEND) but no header: only a decoder can tell
        "headless.png": b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND\xaeB`\x82",
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    bad = [EditRow(id=f"bad-{name}", source=folder / name, instruction="Make it red.") for name in files]
    missing = EditRow(id="missing", source=folder / "nowhere.png", instruction="Make it red.")
    rows = [good[0], bad[0], good[1], missing, bad[1], good[2], bad[2], bad[3], good[3]]
    bad_paths = [missing.source] + [r.source for r in bad]
    return write_manifest(folder / "broken.jsonl", rows), [r.id for r in good], bad_paths


@pytest.mark.parametrize("prefetch", [0, 2])
def test_broken_files_are_skipped_counted_and_warned_once(tmp_path, folders, backend, prefetch):
    manifest, good_ids, bad_paths = broken_manifest(tmp_path, folders["shapes", "jpeg"])
    loader = EditLoader(manifest, batch_size=9, size=32, backend=backend, prefetch=prefetch)
    with pytest.warns(SkippedImageWarning) as caught:
        (batch,) = list(loader)                                           # the rest of the batch still arrives
    assert [row.id for row in batch.rows] == good_ids and batch.images.shape == (4, 3, 32, 32)
    assert loader.stats.missing == 1 and loader.stats.corrupt == 4 and loader.stats.images == 4
    assert sorted(loader.stats.skipped_files) == sorted(map(str, bad_paths))
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedImageWarning)]
    assert len(messages) == 5 and all(any(str(p) in m for m in messages) for p in bad_paths)
    assert loader.stats.skipped_files[str(tmp_path / "truncated.jpg")].startswith("truncated JPEG")

    loader.set_epoch(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedImageWarning)               # a second epoch warns no more
        assert sum(len(b) for b in loader) == 4
    assert loader.stats.missing == 2 and loader.stats.corrupt == 8
    loader.close()


def test_a_batch_of_only_broken_files_is_skipped(tmp_path, folders, backend):
    manifest, good_ids, _ = broken_manifest(tmp_path, folders["shapes", "png"])
    rows = read_manifest(manifest)
    ordered = [r for r in rows if r.id not in good_ids] + [r for r in rows if r.id in good_ids]   # 5 bad, then 4 good
    with pytest.warns(SkippedImageWarning):
        with EditLoader(ordered, batch_size=5, size=16, backend=backend, prefetch=0) as loader:
            batches = list(loader)
    assert [[row.id for row in b.rows] for b in batches] == [good_ids]


def test_integrity_check_accepts_complete_files_and_trailers(folders):
    for image_format in ("png", "jpeg"):
        for row in read_manifest(folders["textured", image_format]):
            data = row.source.read_bytes()
            assert encoded_problem(data) is None
            assert encoded_problem(data + b"camera trailer \xff\xd8 bytes") is None
            for cut in (len(data) // 3, len(data) - 3):
                assert encoded_problem(data[:cut]) is not None
    assert encoded_problem(b"") == "empty file"
    assert encoded_problem(b"BM other formats are left to the decoders") is None


# ---- sharding ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_items", [0, 1, 7, 10, 23])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_disjoint_covering_and_deterministic(num_items, world_size, shuffle):
    for epoch in (0, 1):
        shards = [shard_indices(num_items, rank, world_size, epoch=epoch, shuffle=shuffle, seed=3)
                  for rank in range(world_size)]
        joined = np.concatenate(shards)
        assert sorted(joined.tolist()) == list(range(num_items))                # disjoint and covering
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        again = [shard_indices(num_items, rank, world_size, epoch=epoch, shuffle=shuffle, seed=3)
                 for rank in range(world_size)]
        assert all(np.array_equal(a, b) for a, b in zip(shards, again))
        if not shuffle:
            assert all(s.tolist() == list(range(rank, num_items, world_size)) for rank, s in enumerate(shards))
        equal = [shard_indices(num_items, rank, world_size, epoch=epoch, shuffle=shuffle, seed=3, equal=True)
                 for rank in range(world_size)]
        assert len({len(s) for s in equal}) == 1
        assert len(set(np.concatenate(equal).tolist())) == len(equal[0]) * world_size


def test_shuffle_depends_on_seed_and_epoch():
    order = shard_indices(50, 0, 1, epoch=0, shuffle=True, seed=1)
    assert not np.array_equal(order, shard_indices(50, 0, 1, epoch=1, shuffle=True, seed=1))
    assert not np.array_equal(order, shard_indices(50, 0, 1, epoch=0, shuffle=True, seed=2))
    assert not np.array_equal(order, np.arange(50))
    with pytest.raises(ValueError, match="rank"):
        shard_indices(5, 3, 3)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_loader_shards_cover_the_manifest_once_per_epoch(folders, backend, world_size):
    manifest = folders["textured", "png"]
    all_ids = sorted(row.id for row in read_manifest(manifest))
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world_size):
            with EditLoader(manifest, batch_size=2, size=16, backend=backend, rank=rank, world_size=world_size,
                            shuffle=True, seed=9) as loader:
                loader.set_epoch(epoch)
                assert len(loader) == -(-len(loader.shard()) // 2)
                ids = [row.id for batch in loader for row in batch.rows]
                loader.set_epoch(epoch)
                assert [row.id for batch in loader for row in batch.rows] == ids     # same epoch, same order
            per_rank.append(ids)
        assert sorted(sum(per_rank, [])) == all_ids


# ---- choice of backend, timing -----------------------------------------------------------------------------------
def test_backend_choice():
    assert "pillow" in available_backends()
    expected = "pillow" if dali_unavailable_reason() else "dali"
    assert make_decoder("auto", 16, max_batch=2).name == expected
    with pytest.raises(ValueError, match="unknown loader backend"):
        make_decoder("opencv", 16, max_batch=2)
    if dali_unavailable_reason():
        with pytest.raises(RuntimeError, match="unavailable"):
            make_decoder("dali", 16, max_batch=2)


def test_measure_loader_reports_images_per_second(folders, backend):
    timing = measure_loader(folders["textured", "jpeg"], backend=backend, batch_size=4, size=32, num_batches=5,
                            warmup_batches=1)
    assert timing.backend == backend and timing.images == 20 and timing.batches == 5      # cycles over epochs
    assert timing.images_per_s > 0 and timing.seconds > 0 and timing.skipped == 0
