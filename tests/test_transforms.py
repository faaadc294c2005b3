"""Batched transforms: the functional layer against torchvision.transforms.v2.functional applied per sample with the
same parameters; the random classes for seeding, per-sample variety, probabilities, shapes, dtypes and validation."""
import pickle

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from reprlab.core import make_generator
from reprlab.transforms import (
    CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ColorJitter, Compose, Denormalize, GaussianBlur,
    GaussianNoise, Grayscale, Lambda, MultiCrop, MultiView, Normalize, RandomGrayscale, RandomHorizontalFlip,
    RandomResizedCrop, RandomRotation, RandomSolarize, RandomTransform, RandomVerticalFlip, Transform,
    adjust_brightness_batch, adjust_contrast_batch, adjust_hue_batch, adjust_saturation_batch, basic_augment,
    denormalize_batch, dino_augment, gaussian_blur_batch, hflip_batch, normalize_batch, resized_crop_batch,
    rgb_to_grayscale_batch, rotate_batch, simclr_augment, solarize_batch, to_float, vflip_batch)


def batch(b=8, c=3, h=32, w=32, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def per_sample(fn, x, params):
    "The torchvision reference: `fn(x[i], params[i])` stacked."
    return torch.stack([fn(x[i], float(params[i])) for i in range(len(x))])


# ---------------------------------------------------------------- functional layer vs torchvision, same parameters

def test_flips_are_torch_flip_exactly_on_the_masked_samples():
    x, m = batch(), torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    for fn, dim in [(hflip_batch, -1), (vflip_batch, -2)]:
        y = fn(x, m)
        assert torch.equal(y[m], torch.flip(x[m], [dim])) and torch.equal(y[~m], x[~m])
        assert torch.equal(fn(x), torch.flip(x, [dim]))
    assert torch.equal(hflip_batch(x, torch.zeros(8, dtype=torch.bool)), x)


@pytest.mark.parametrize("n_out", [1, 3])
def test_grayscale_matches_torchvision(n_out):
    x = batch()
    torch.testing.assert_close(rgb_to_grayscale_batch(x, n_out), TF.rgb_to_grayscale(x, n_out), atol=1e-7, rtol=0)


@pytest.mark.parametrize("fn,ref,lo,hi", [
    (adjust_brightness_batch, TF.adjust_brightness, 0.0, 2.0),
    (adjust_contrast_batch, TF.adjust_contrast, 0.0, 2.0),
    (adjust_saturation_batch, TF.adjust_saturation, 0.0, 2.0),
    (adjust_hue_batch, TF.adjust_hue, -0.5, 0.5)])
def test_colour_adjustments_match_torchvision_per_sample(fn, ref, lo, hi):
    x = batch(16)
    x[0] = x[0, :1]                                   # a gray image
    x[1, 0] = x[1, 1]                                 # ties between channels
    x[2, :, :4] = 0.0; x[3, :, :4] = 1.0              # black and white pixels
    f = torch.linspace(lo, hi, 16)
    atol = 1e-4 if fn is adjust_hue_batch else 1e-5
    torch.testing.assert_close(fn(x, f), per_sample(ref, x, f), atol=atol, rtol=0)
    torch.testing.assert_close(fn(x, 0.3 if fn is adjust_hue_batch else 1.3),
                               per_sample(ref, x, torch.full((16,), 0.3 if fn is adjust_hue_batch else 1.3)), atol=atol, rtol=0)


def test_colour_adjustments_on_one_channel_follow_torchvision():
    x, f = batch(4, c=1), torch.tensor([0.5, 0.9, 1.2, 1.7])
    torch.testing.assert_close(adjust_brightness_batch(x, f), per_sample(TF.adjust_brightness, x, f), atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_contrast_batch(x, f), per_sample(TF.adjust_contrast, x, f), atol=1e-6, rtol=0)
    assert torch.equal(adjust_saturation_batch(x, f), x) and torch.equal(adjust_hue_batch(x, f - 1), x)


def test_identity_factors_leave_images_unchanged():
    x = batch()
    for fn in (adjust_brightness_batch, adjust_contrast_batch, adjust_saturation_batch):
        torch.testing.assert_close(fn(x, 1.0), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_hue_batch(x, 0.0), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [3, 5, (5, 3), (1, 7)])
def test_gaussian_blur_matches_torchvision_per_sample(k):
    x, s = batch(6, h=20, w=24), torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    ks = [k, k] if isinstance(k, int) else list(k)
    ref = torch.stack([TF.gaussian_blur(x[i], ks, [float(s[i])]) for i in range(6)])
    torch.testing.assert_close(gaussian_blur_batch(x, k, s), ref, atol=1e-5, rtol=0)


def test_solarize_matches_torchvision():
    x = batch()
    for t in (0.0, 0.3, 0.5, 1.0):
        assert torch.equal(solarize_batch(x, t), TF.solarize(x, t))
    m = torch.arange(8) % 2 == 0
    y = solarize_batch(x, 0.5, m)
    assert torch.equal(y[m], TF.solarize(x[m], 0.5)) and torch.equal(y[~m], x[~m])


def test_normalize_matches_torchvision_and_denormalize_inverts_it():
    x = batch()
    for mean, std in [(IMAGENET_MEAN, IMAGENET_STD), (CIFAR10_MEAN, CIFAR10_STD)]:
        torch.testing.assert_close(normalize_batch(x, mean, std), TF.normalize(x, list(mean), list(std)), atol=1e-6, rtol=0)
        torch.testing.assert_close(denormalize_batch(normalize_batch(x, mean, std), mean, std), x, atol=1e-6, rtol=0)
        torch.testing.assert_close(Denormalize(mean, std)(Normalize(mean, std)(x)), x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="channels"): normalize_batch(batch(c=3), (0.5, 0.5), (0.2, 0.2))


def test_resized_crop_full_box_is_identity():
    x = batch(4, h=24, w=32)
    torch.testing.assert_close(resized_crop_batch(x, torch.tensor([[0, 0, 24, 32]] * 4), (24, 32)), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("box,size", [((2, 3, 8, 10), (20, 24)), ((5, 0, 16, 16), (16, 16)), ((0, 4, 12, 20), (6, 10))])
def test_resized_crop_matches_torchvision_in_the_interior(box, size):
    x = batch(2)
    y = resized_crop_batch(x, torch.tensor([box, box]), size)
    ref = TF.resized_crop(x, *box, list(size), antialias=False)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    assert y.shape == (2, 3, *size)


def test_resized_crop_per_sample_boxes_and_several_views():
    x = batch(3)
    boxes = torch.tensor([[0, 0, 16, 16], [8, 8, 16, 16], [4, 2, 20, 28]])
    y = resized_crop_batch(x, boxes, 16)
    for i in range(3):
        ref = TF.resized_crop(x[i], *boxes[i].tolist(), [16, 16], antialias=False)
        torch.testing.assert_close(y[i, :, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-5, rtol=0)
    views = resized_crop_batch(x, torch.stack([boxes, boxes.flip(0)], 1), 16)      # (B, V=2, 4) -> (2 * B, ...)
    assert views.shape == (6, 3, 16, 16)
    torch.testing.assert_close(views[:3], y); torch.testing.assert_close(views[3:], resized_crop_batch(x, boxes.flip(0), 16))


def test_rotation_by_0_is_identity_and_by_90_is_rot90():
    x = batch(4, h=16, w=16)
    torch.testing.assert_close(rotate_batch(x, 0.0), x, atol=1e-5, rtol=0)
    y = rotate_batch(x, torch.tensor([90.0, -90.0, 180.0, 0.0]))
    refs = [torch.rot90(x[0], 1, (-2, -1)), torch.rot90(x[1], -1, (-2, -1)), torch.rot90(x[2], 2, (-2, -1)), x[3]]
    for yi, r in zip(y, refs): torch.testing.assert_close(yi[:, 1:-1, 1:-1], r[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_rotation_fill_and_direction_match_torchvision():
    x = batch(1, h=16, w=16)
    ref = TF.rotate(x[0], 30.0, interpolation=TF.InterpolationMode.BILINEAR, fill=[0.2, 0.5, 0.7])
    y = rotate_batch(x, 30.0, fill=(0.2, 0.5, 0.7))[0]
    assert (y - ref).abs().mean() < 0.01                  # same direction, centre and fill; boundary rounding differs


# ---------------------------------------------------------------- random transforms

ALL = [RandomResizedCrop(24), RandomHorizontalFlip(), RandomVerticalFlip(), RandomRotation(30),
       ColorJitter(0.4, 0.4, 0.4, 0.1), RandomGrayscale(0.5), GaussianBlur(5), RandomSolarize(0.5),
       GaussianNoise(0.05), RandomTransform(ColorJitter(0.4), p=0.5), basic_augment(24), simclr_augment(32, blur=True)]


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_same_seed_same_output_other_seed_other_output(t):
    x = batch(16)
    a, b, c = t(x, make_generator(0, 1)), t(x, make_generator(0, 1)), t(x, make_generator(0, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_shapes_and_dtypes_are_kept_and_input_not_modified(t):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = batch(8).to(dtype); x0 = x.clone()
        y = t(x, make_generator(0))
        assert y.dtype == dtype and y.shape[:2] == x.shape[:2] and torch.equal(x, x0)
        if not isinstance(t, (RandomResizedCrop, Compose)): assert y.shape == x.shape


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_channels_last_input_gives_the_same_result(t):
    x = batch(8)
    torch.testing.assert_close(t(x.to(memory_format=torch.channels_last), make_generator(3)), t(x, make_generator(3)))


def test_global_rng_is_used_without_a_generator():
    t, x = basic_augment(16), batch()
    torch.manual_seed(0); a = t(x)
    torch.manual_seed(0); b = t(x)
    assert torch.equal(a, b)


def test_parameters_differ_between_samples():
    x = batch(1).expand(16, -1, -1, -1).contiguous()      # 16 copies of one image
    for t in [RandomResizedCrop(16), RandomRotation(45), ColorJitter(brightness=0.5), ColorJitter(hue=0.3),
              GaussianBlur(5), GaussianNoise(0.1)]:
        y = t(x, make_generator(0)).flatten(1)
        assert len({tuple(r.tolist()) for r in y}) == 16, t
    boxes = RandomResizedCrop(16).get_params(16, 32, 32, make_generator(0))
    assert len({tuple(b.tolist()) for b in boxes}) == 16


def test_random_resized_crop_boxes_follow_scale_and_ratio():
    t = RandomResizedCrop(32, scale=(0.25, 0.5), ratio=(0.5, 2.0))
    top, left, h, w = t.get_params(2000, 64, 48, make_generator(0)).unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 48).all()
    area = h * w / (64 * 48)
    assert (area > 0.22).all() and (area < 0.53).all()           # rounding to whole pixels
    assert ((w / h) > 0.45).all() and ((w / h) < 2.2).all()
    assert top.unique().numel() > 10 and left.unique().numel() > 10
    # no try fits: centre crop with the ratio clamped, as torchvision
    boxes = RandomResizedCrop(8, scale=(0.95, 1.0), ratio=(2.0, 3.0)).get_params(3, 32, 32, make_generator(0))
    assert torch.equal(boxes, torch.tensor([[8.0, 0.0, 16.0, 32.0]] * 3))


def test_colour_jitter_equals_torchvision_with_the_drawn_factors_and_order():
    t, x = ColorJitter(0.4, 0.4, 0.4, 0.1), batch(8)
    factors, order = t.get_params(8, make_generator(4))
    ref = x
    for o in order: ref = per_sample(getattr(TF, f"adjust_{o}"), ref, factors[o])
    torch.testing.assert_close(t(x, make_generator(4)), ref, atol=1e-4, rtol=0)
    assert ColorJitter(0.4, 0.4, order="fixed").get_params(2, make_generator(0))[1] == ["brightness", "contrast"]
    orders = {tuple(t.get_params(2, make_generator(s))[1]) for s in range(30)}
    assert len(orders) > 5                                            # the order is random per batch


def test_colour_jitter_ranges_follow_torchvision():
    t = ColorJitter(0.5, (0.2, 0.3), 0.0, 0.25)
    assert (t.brightness, t.contrast, t.saturation, t.hue) == ((0.5, 1.5), (0.2, 0.3), None, (-0.25, 0.25))
    assert ColorJitter(brightness=2.0).brightness == (0.0, 3.0)
    f, _ = t.get_params(1000, make_generator(0))
    assert set(f) == {"brightness", "contrast", "hue"}
    assert f["brightness"].min() >= 0.5 and f["brightness"].max() <= 1.5 and f["hue"].abs().max() <= 0.25


@pytest.mark.parametrize("t", [RandomHorizontalFlip, RandomVerticalFlip, RandomGrayscale,
                               lambda p: RandomSolarize(0.0, p), lambda p: GaussianNoise(0.1, p),
                               lambda p: RandomTransform(GaussianBlur(3, 1.0), p)])
def test_probability_zero_changes_nothing_and_one_changes_all(t):
    x = batch(16)
    assert torch.equal(t(0.0)(x, make_generator(0)), x)
    changed = (t(1.0)(x, make_generator(0)) != x).flatten(1).any(1)
    assert changed.all()
    half = (t(0.5)(x, make_generator(0)) != x).flatten(1).any(1)
    assert 0 < half.sum() < 16


def test_random_transform_runs_fn_on_the_selected_samples_only():
    seen = []
    def fn(x): seen.append(len(x)); return 1 - x
    x = batch(32)
    y = RandomTransform(fn, p=0.5)(x, make_generator(0))
    changed = (y != x).flatten(1).any(1)
    assert seen == [int(changed.sum())] and 0 < seen[0] < 32
    assert torch.equal(y[changed], 1 - x[changed]) and torch.equal(y[~changed], x[~changed])
    with pytest.raises(ValueError, match="keep the image shape"):
        RandomTransform(RandomResizedCrop(8), p=0.5)(x, make_generator(0))


def test_one_channel_images():
    x = batch(8, c=1)
    for t in [RandomResizedCrop(16), RandomHorizontalFlip(), RandomRotation(20), ColorJitter(0.4, 0.4, 0.4, 0.1),
              RandomGrayscale(1.0), GaussianBlur(3), RandomSolarize(0.5), GaussianNoise(0.1), Normalize((0.5,), (0.2,))]:
        y = t(x, make_generator(0))
        assert y.shape[:2] == (8, 1), t
    assert torch.equal(RandomGrayscale(1.0)(x), x) and Grayscale(3)(x).shape == (8, 3, 32, 32)


def test_multi_view_and_multi_crop():
    x = batch(4)
    v = MultiView([basic_augment(16), basic_augment(16)])(x, make_generator(0))
    assert len(v) == 2 and all(a.shape == (4, 3, 16, 16) for a in v) and not torch.equal(v[0], v[1])
    views = MultiCrop(24, 12, n_global=2, n_local=5)(x, make_generator(0))
    assert [tuple(a.shape) for a in views] == [(4, 3, 24, 24)] * 2 + [(4, 3, 12, 12)] * 5
    assert len({a.sum().item() for a in views}) == 7
    d = dino_augment(32, 16, n_local=3, blur=True)(x, make_generator(0))
    assert [a.shape[-1] for a in d] == [32, 32, 16, 16, 16]
    assert all(torch.equal(a, b) for a, b in zip(d, dino_augment(32, 16, n_local=3, blur=True)(x, make_generator(0))))
    assert len(MultiCrop(24, 12, n_local=0)(x)) == 2


def test_multi_crop_local_crops_are_smaller_regions():
    t = MultiCrop(32, 16, n_local=4)
    g = t.global_crop.get_params(1000, 64, 64, make_generator(0)); l = t.local_crop.get_params(1000, 64, 64, make_generator(0))
    assert (g[:, 2] * g[:, 3]).min() >= 0.38 * 64 * 64 and (l[:, 2] * l[:, 3]).max() <= 0.42 * 64 * 64


def test_presets():
    b = basic_augment(32)
    assert [type(t).__name__ for t in b.transforms] == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"]
    assert b.transforms[2].hue == (-0.1, 0.1) and b.transforms[2].saturation == (0.6, 1.4)
    assert len(simclr_augment(32).transforms) == 4 and len(simclr_augment(96).transforms) == 5    # blur for large sizes
    assert isinstance(simclr_augment(32, normalize=(CIFAR10_MEAN, CIFAR10_STD)).transforms[-1], Normalize)
    y = basic_augment(32, normalize=(CIFAR10_MEAN, CIFAR10_STD))(batch(), make_generator(0))
    assert y.min() < 0


def test_reprs_are_readable():
    assert repr(RandomResizedCrop(32)) == "RandomResizedCrop(size=(32, 32), scale=(0.08, 1.0), ratio=(0.75, 1.333))"
    assert repr(RandomHorizontalFlip()) == "RandomHorizontalFlip(p=0.5)"
    assert repr(ColorJitter(0.4, hue=0.1)) == "ColorJitter(brightness=(0.6, 1.4), hue=(-0.1, 0.1))"
    assert repr(GaussianBlur(3)) == "GaussianBlur(kernel_size=(3, 3), sigma=(0.1, 2.0))"
    assert repr(RandomTransform(RandomGrayscale(1.0), 0.8)) == "RandomTransform(RandomGrayscale(p=1.0), p=0.8)"
    assert repr(basic_augment(32)).splitlines()[0] == "Compose(["
    assert "local_crop=RandomResizedCrop(size=(96, 96), scale=(0.05, 0.4)" in repr(dino_augment())


def test_transforms_pickle_for_workers():
    t = dino_augment(32, 16, n_local=2)
    u = pickle.loads(pickle.dumps(t))
    x = batch(4)
    assert all(torch.equal(a, b) for a, b in zip(t(x, make_generator(1)), u(x, make_generator(1))))


def test_autocast_does_not_change_results():
    t, x = simclr_augment(32, blur=True), batch()
    ref = t(x, make_generator(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = t(x, make_generator(0))
    assert y.dtype == torch.float32 and torch.equal(y, ref)


def test_parameters_do_not_depend_on_the_device_or_dtype():
    "Parameters come from the CPU generator only: the same boxes whatever the batch's dtype (and device, on CUDA)."
    t = basic_augment(16)
    a = t(batch(), make_generator(0)); b = t(batch().double(), make_generator(0))
    torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=0)
    if torch.cuda.is_available():
        c = t(batch().cuda(), make_generator(0))
        torch.testing.assert_close(a, c.cpu(), atol=1e-4, rtol=0)


def test_uint8_input_and_bad_generator_are_rejected_clearly():
    x = (batch() * 255).to(torch.uint8)
    with pytest.raises(TypeError, match="to_float"): basic_augment(16)(x)
    assert torch.equal(to_float(x), x.float() / 255)
    with pytest.raises(ValueError, match="B, C, H, W"): basic_augment(16)(batch()[0])


def test_lambda_and_callables_compose():
    def invert(x): return 1 - x
    def noisy(x, gen): return x + torch.rand(x.shape, generator=gen) * 0
    t = Compose([RandomHorizontalFlip(), invert, noisy])
    assert isinstance(t.transforms[1], Lambda) and not t.transforms[1].takes_gen and t.transforms[2].takes_gen
    x = batch(); torch.testing.assert_close(t(x, make_generator(0)), 1 - RandomHorizontalFlip()(x, make_generator(0)))
    assert isinstance(t, Transform)


@pytest.mark.parametrize("make,match", [
    (lambda: RandomHorizontalFlip(1.5), "probability"), (lambda: RandomTransform(lambda x: x, p=-0.1), "probability"),
    (lambda: RandomResizedCrop(32, scale=(0.5, 0.2)), "scale"), (lambda: RandomResizedCrop(32, scale=(0.0, 0.5)), "scale"),
    (lambda: RandomResizedCrop(32, ratio=(-1, 2)), "ratio"), (lambda: RandomResizedCrop(0), "size"),
    (lambda: RandomResizedCrop(32, interpolation="area"), "interpolation"),
    (lambda: GaussianBlur(4), "odd"), (lambda: GaussianBlur(3, sigma=(2.0, 1.0)), "sigma"), (lambda: GaussianBlur(3, 0), "sigma"),
    (lambda: GaussianNoise(-0.1), "std"), (lambda: ColorJitter(brightness=-0.1), "brightness"),
    (lambda: ColorJitter(hue=0.7), "hue"), (lambda: ColorJitter(order="shuffle"), "order"),
    (lambda: RandomRotation(-5), "degrees"), (lambda: RandomSolarize(2.0), "threshold"),
    (lambda: Normalize((0.5, 0.5), (0.2,)), "std"), (lambda: Normalize((0.5,), (0.0,)), "std"),
    (lambda: MultiCrop(32, 16, n_global=0), "n_global"), (lambda: MultiCrop(32, 16, local_transform=[None]), "local_transform"),
    (lambda: Grayscale(2), "num_output_channels")])
def test_bad_hyperparameters_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match): make()


def test_blur_kernel_larger_than_image_is_an_error():
    with pytest.raises(ValueError, match="too large"): gaussian_blur_batch(batch(h=4, w=4), 9, 1.0)
