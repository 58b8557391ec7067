"""Models: the registry, output shapes of every architecture, FLOP counts against the paper,
the 9/7 wavelet, the WAE losses, and what a briefly trained WAE actually learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.preprocess import CIFAR, IMAGENET, IMAGENETTE, Preprocessing
from wae_deploy.training.models import FAMILIES, Decomposed, create_model, default_preprocessing, list_archs, parse_arch
from wae_deploy.training.models.assemble import Plain, Resized
from wae_deploy.training.models.flops import baseline_of, count, theoretical_speedup
from wae_deploy.training.models.wae import (
    DWT97,
    WAEDecoder,
    WAEEncoder,
    decomposition_stats,
    edge_correlation,
    energy_loss,
    init_haar,
    reconstruction_loss,
    wae_loss,
)

PAPER_SCALE = [a for a in list_archs() if parse_arch(a)[1].preprocessing == IMAGENET]
CIFAR_SCALE = [a for a in list_archs() if parse_arch(a)[1].preprocessing == CIFAR]
PHOTO_SCALE = [a for a in list_archs() if parse_arch(a)[1].preprocessing == IMAGENETTE]
G = 1e9


# --------------------------------------------------------------------------- registry

def test_registry_lists_every_family_in_every_kind():
    archs = list_archs()
    assert len(archs) == len(set(archs)) == 4 * len(FAMILIES)
    for f in FAMILIES:
        assert {f, f"{f}-resized", f"{f}-dwt", f"wae-{f}"} <= set(archs)
    assert set(PAPER_SCALE) | set(CIFAR_SCALE) | set(PHOTO_SCALE) == set(archs)
    assert {"vgg16", "wae-vgg16", "resnet50", "wae-resnet50"} <= set(PAPER_SCALE)
    assert {"resnet20", "wae-resnet20", "resnet20-resized", "resnet20-dwt"} == set(CIFAR_SCALE)


@pytest.mark.parametrize("arch", list_archs())
def test_parse_arch_round_trips(arch):
    kind, family = parse_arch(arch)
    assert family.name in arch and kind in ("plain", "resized", "dwt", "wae")
    assert default_preprocessing(arch) == family.preprocessing
    assert baseline_of(arch) == family.name


@pytest.mark.parametrize("name", ["nope", "wae-nope", "resnet21", "vgg16-foo", "WAE-resnet20", "wae-", "",
                                  "resnet20-resized-dwt"])
def test_unknown_architecture_is_a_user_error_listing_known_ones(name):
    for call in (parse_arch, create_model, default_preprocessing):
        with pytest.raises(UserError) as e:
            call(name)
        msg = str(e.value)
        assert e.value.exit_code == 2
        assert "\n" not in msg
        assert repr(name) in msg
        for known in list_archs():
            assert known in msg


def test_input_size_must_be_even_and_large_enough():
    with pytest.raises(UserError, match="even"):
        create_model("wae-resnet20", input_size=33)
    # VGG16 pools five times: 32 pixels is its smallest input, so a WAE on it needs 64.
    for arch, size in (("vgg16", 16), ("wae-vgg16", 32), ("vgg16-resized", 32)):
        with pytest.raises(UserError, match="at least 32"):
            create_model(arch, input_size=size)


# --------------------------------------------------------------------------- shapes

def _expected_class(arch):
    return {"plain": Plain, "resized": Resized, "dwt": Decomposed, "wae": Decomposed}[parse_arch(arch)[0]]


@pytest.mark.parametrize("arch", list_archs())
def test_forward_shapes(arch):
    """Every architecture maps N x 3 x S x S to N x classes; paper-scale nets run at 64 pixels here
    (their one 224-pixel forward each is in test_flops_at_224_for_every_paper_scale_arch)."""
    size = 32 if arch in CIFAR_SCALE else 64
    classes = 7
    torch.manual_seed(0)
    model = create_model(arch, num_classes=classes, input_size=size)
    assert isinstance(model, _expected_class(arch))
    x = torch.randn(2, 3, size, size)
    model.train()
    assert model(x).shape == (2, classes)  # batch statistics: BatchNorm in training mode
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, classes) and torch.isfinite(y).all()

    if isinstance(model, Decomposed):
        with torch.no_grad():
            low, high = model.decompose(x)
            assert low.shape == (2, 3, size // 2, size // 2)
            assert high.shape == (2, model.decomposer.high_channels, size // 2, size // 2)
            assert model.decomposer.high_channels == (3 if arch.startswith("wae-") else 9)
            if arch.startswith("wae-"):
                assert model.decoder(low, high).shape == x.shape
            else:
                assert model.decoder is None
            main, fusion = model.heads(low, high)
            assert torch.allclose(y, main + fusion, atol=1e-5)  # the deployed score is the sum
            model.output = "main"
            assert torch.equal(model(x), main)
            model.output = "fusion"
            assert torch.equal(model(x), fusion)


def test_default_input_sizes():
    assert default_preprocessing("wae-resnet20").crop == 32
    assert default_preprocessing("wae-vgg16").crop == 224
    # A CIFAR-scale model built with its defaults has 10 classes; a paper-scale one 1000.
    with torch.no_grad():
        assert create_model("wae-resnet20").eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert create_model("resnet50").net.head.out_features == 1000


# --------------------------------------------------------------------------- FLOPs

@pytest.fixture(scope="module")
def paper_counts():
    """MAC counts at 224x224 of every paper-scale architecture, and its output shape there."""
    counts, shapes = {}, {}
    for arch in PAPER_SCALE:
        torch.manual_seed(0)
        model = create_model(arch)
        hook = model.register_forward_hook(lambda m, a, out, arch=arch: shapes.__setitem__(arch, tuple(out.shape)))
        counts[arch] = count(model, 224)  # one forward of a 1 x 3 x 224 x 224 image
        hook.remove()
        del model
    return counts, shapes


def test_flops_at_224_for_every_paper_scale_arch(paper_counts):
    counts, shapes = paper_counts
    for arch in PAPER_SCALE:
        assert shapes[arch] == (1, 1000), arch
        c = counts[arch]
        assert set(c.macs) <= {"encoder", "main", "high", "fusion"}
        base = counts[baseline_of(arch)].total_macs
        speedup = base / c.total_macs
        kind = parse_arch(arch)[0]
        if kind == "plain":
            assert speedup == 1
        elif kind == "resized":
            assert 3.5 < speedup < 4.1, (arch, speedup)  # a quarter of the pixels, a smaller fc6
        else:
            assert set(c.macs) == {"encoder", "main", "high", "fusion"}
            assert 2.5 < speedup < 4.0, (arch, speedup)


def _within(value, target, rel):
    return abs(value - target) <= rel * target


def test_flops_agree_with_the_paper(paper_counts):
    counts, _ = paper_counts
    vgg, resized, wae = counts["vgg16"].total_macs, counts["vgg16-resized"].total_macs, counts["wae-vgg16"]
    assert _within(vgg, 15.36 * G, 0.10), vgg / G
    assert _within(resized, 3.89 * G, 0.10), resized / G
    assert _within(wae.total_macs, 4.11 * G, 0.10), wae.total_macs / G
    # Our WAE-VGG16 count includes the encoder (the paper's 0.26 G); without it, the paper's 4.11 G.
    assert _within(wae.macs["encoder"], 0.26 * G, 0.10)
    assert _within(wae.total_macs - wae.macs["encoder"], 4.11 * G, 0.02)
    assert _within(vgg / wae.total_macs, 3.7, 0.10), vgg / wae.total_macs
    # The paper's theoretical speed-up 1 / (1/4 + 1/64): a quarter-width branch costs 1/16 of the
    # main convolutions at the same resolution (main also holds the 1024-wide fc head: 28.1 M).
    main_convs = wae.macs["main"] - (512 * 7 * 7 * 1024 + 1024 * 1024 + 1024 * 1000)
    assert _within(wae.macs["high"] / main_convs, 1 / 16, 0.05)
    # ResNet-50 at 224 is the well-known 4.1 G multiply-adds.
    assert _within(counts["resnet50"].total_macs, 4.1 * G, 0.03)


def test_encoder_macs_are_exact_and_the_decoder_is_not_counted(paper_counts):
    counts, _ = paper_counts
    enc = counts["wae-vgg16"].macs["encoder"]
    # 3 convs 3x3 at 224^2 (3->16, 16->16, 16->16), then two stride-2 3x3 heads 16->3 at 112^2.
    assert enc == 224 * 224 * 9 * (3 * 16 + 16 * 16 + 16 * 16) + 2 * 112 * 112 * 9 * 16 * 3
    model = create_model("wae-resnet20")
    c = count(model, 32)
    assert c.params["encoder"] == sum(p.numel() for p in model.decomposer.parameters())
    decoder_params = sum(p.numel() for p in model.decoder.parameters())
    conv_fc = sum(p.numel() for n, m in model.named_modules() if not n.startswith("decoder")
                  and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for p in m.parameters())
    assert decoder_params > 0 and c.total_params == conv_fc
    assert model.training  # count() restores the mode it found


def test_theoretical_speedup_and_resnet20_reference_numbers():
    s = theoretical_speedup("wae-vgg16")
    assert _within(s, 3.7, 0.10), s
    # ResNet-20 (He et al. 2016): 0.27 M parameters, about 41 M multiply-adds at 32x32.
    c = count(create_model("resnet20"), 32)
    assert _within(c.total_params, 0.27e6, 0.02), c.total_params
    assert _within(c.total_macs, 41e6, 0.03), c.total_macs
    assert theoretical_speedup("resnet20") == 1.0
    assert _within(theoretical_speedup("resnet20-resized"), 4.0, 0.01)


# --------------------------------------------------------------------------- the 9/7 wavelet

def test_dwt97_of_a_constant_image_is_that_constant_times_the_gain():
    dwt = DWT97()
    assert sum(p.numel() for p in dwt.parameters()) == 0  # nothing to learn
    gain = float(dwt.weight[0, 0].sum())  # 2-D low-pass DC gain = (sum of the 1-D taps)^2
    assert gain == pytest.approx(1.0, abs=1e-6)  # JPEG 2000's normalisation of the 9/7 filters
    consts = torch.tensor([0.7, -1.3, 2.5])  # a different constant per colour channel
    x = consts.view(1, 3, 1, 1).expand(2, 3, 16, 24).contiguous()
    low, high = dwt(x)
    assert low.shape == (2, 3, 8, 12) and high.shape == (2, 9, 8, 12)
    assert torch.allclose(low, (consts * gain).view(1, 3, 1, 1).expand_as(low), atol=1e-5)
    assert high.abs().max() < 1e-5


def test_dwt97_puts_a_checkerboard_in_the_diagonal_band_only():
    dwt = DWT97()
    i = torch.arange(16)
    board = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float()  # +-1, the highest frequency there is
    x = torch.stack([board, 2 * board, -board]).unsqueeze(0)
    low, high = dwt(x)
    assert low.abs().max() < 1e-5
    hi = torch.tensor([0.0, 0.091271763114, -0.057543526229, -0.591271763114, 1.115087052457,
                       -0.591271763114, -0.057543526229, 0.091271763114, 0.0])
    nyquist_gain = float((hi * (-1.0) ** torch.arange(9)).sum()) ** 2  # = 4
    bands = high.view(1, 3, 3, 8, 8)  # colour, (cH, cV, cD)
    assert bands[:, :, :2].abs().max() < 1e-5
    for c, amp in enumerate((1.0, 2.0, 1.0)):
        assert torch.allclose(bands[0, c, 2].abs(), torch.full((8, 8), amp * nyquist_gain), atol=1e-4)


# --------------------------------------------------------------------------- losses

def test_losses_sum_over_pixels_and_average_over_the_batch():
    image = torch.zeros(2, 3, 4, 4)
    recon = torch.cat([torch.full((1, 3, 4, 4), 1.0), torch.full((1, 3, 4, 4), 2.0)])
    assert reconstruction_loss(image, recon).item() == pytest.approx((48 * 1 + 48 * 4) / 2)
    high = torch.cat([torch.full((1, 3, 2, 2), 3.0), torch.zeros(1, 3, 2, 2)])
    assert energy_loss(high).item() == pytest.approx(12 * 9 / 2)
    total, lr, le = wae_loss(image, recon, high, lam=0.5)
    assert lr.item() == pytest.approx(120.0) and le.item() == pytest.approx(54.0)
    assert total.item() == pytest.approx(120.0 + 0.5 * 54.0)
    # Both terms push gradients where they should: l_e only into I_H.
    high.requires_grad_(True)
    energy_loss(high).backward()
    assert torch.allclose(high.grad, 2 * high.detach() / len(high))


def test_decomposition_stats():
    std = (0.2, 0.25, 0.5)
    image = torch.randn(2, 3, 8, 8)
    diff = torch.tensor([0.1 / s for s in std]).view(1, 3, 1, 1)  # 0.1 in [0, 1] pixel units
    low = torch.ones(2, 3, 4, 4)
    stats = decomposition_stats(image, low, torch.zeros(2, 3, 4, 4), image + diff, std)
    assert stats["psnr_db"] == pytest.approx(20.0, abs=1e-6)
    assert stats["high_energy_share"] == 0.0
    assert decomposition_stats(image, low, -low, image, std)["high_energy_share"] == pytest.approx(0.5)


def test_psnr_units_follow_the_pixel_scale():
    # A spec that feeds raw 0-255 pixels: a normalised difference of 1 is std[c] / 255 in [0, 1] units.
    raw = Preprocessing(resize=32, crop=32, mean=(0.0, 0.0, 0.0), std=(51.0, 25.5, 255.0), scale=1.0)
    assert raw.unit_std == pytest.approx((0.2, 0.1, 1.0))
    assert CIFAR.unit_std == pytest.approx(CIFAR.std)
    image = torch.zeros(1, 3, 4, 4)
    recon = torch.tensor([0.5, 1.0, 0.1]).view(1, 3, 1, 1).expand(1, 3, 4, 4)  # 0.1 in [0, 1] units each
    assert decomposition_stats(image, image, image, recon, raw.unit_std)["psnr_db"] == pytest.approx(20.0)


def _train_wae(images, lam, steps, batch, lr, seed=0):
    torch.manual_seed(seed)
    enc, dec = WAEEncoder(), WAEDecoder()
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr)
    for s in range(steps):
        i = (s * batch) % (len(images) - batch + 1)
        x = images[i:i + batch]
        low, high = enc(x)
        loss = wae_loss(x, dec(low, high), high, lam)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return enc.eval(), dec.eval()


@pytest.mark.slow
def test_energy_of_high_band_falls_when_lambda_rises(train_images, heldout_images):
    energy = {}
    for lam in (0.0, 10.0):
        enc, _ = _train_wae(train_images[:1280], lam, steps=20, batch=32, lr=3e-3)
        with torch.no_grad():
            energy[lam] = energy_loss(enc(heldout_images)[1]).item()
    # Without the penalty I_H carries as much energy as it likes (thousands); with it, almost none.
    assert energy[10.0] < 0.01 * energy[0.0], energy


@pytest.mark.slow
def test_trained_wae_reconstructs_better_than_bilinear(train_images, heldout_images):
    """Stage 1 briefly (800 Adam steps of 8 images, ~15 s on one thread) beats 2x box-down/bilinear-up."""
    x = heldout_images
    bilinear = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear")
    bilinear_mse = F.mse_loss(bilinear, x).item()
    enc, dec = _train_wae(train_images, lam=1.0, steps=800, batch=8, lr=2e-3)
    with torch.no_grad():
        low, high = enc(x)
        recon = dec(low, high)
    wae_mse = F.mse_loss(recon, x).item()
    assert wae_mse < 0.75 * bilinear_mse, (wae_mse, bilinear_mse)
    # ... and the energy penalty has already pushed most of the image into I_L.
    assert decomposition_stats(x, low, high, recon, CIFAR.std)["high_energy_share"] < 0.05


# --------------------------------------------------------------------------- Haar start, edge measure

def _haar_wae():
    torch.manual_seed(0)
    enc, dec = WAEEncoder(), WAEDecoder()
    init_haar(enc, dec)
    return enc.eval(), dec.eval()


def test_haar_start_is_the_block_mean_and_inverts_exactly_without_chroma_detail():
    enc, dec = _haar_wae()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        low, high = enc(x)
        assert torch.allclose(low, F.avg_pool2d(x, 2), atol=1e-6)
        # Detail that is the same in every colour (what the three bands keep) comes back exactly.
        grey = x[:, :1].repeat(1, 3, 1, 1) + torch.randn(2, 3, 1, 1)
        assert torch.allclose(dec(*enc(grey)), grey, atol=1e-5)
        # A flat image has no detail; a colour checkerboard's detail is all in the diagonal band.
        assert enc(torch.full((1, 3, 8, 8), 0.7))[1].abs().max() < 1e-6
        checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
        bands = enc(checker.expand(1, 3, 8, 8))[1]
    assert bands[0, :2].abs().max() < 1e-6 and torch.allclose(bands[0, 2], -torch.ones(4, 4))


def test_haar_start_keeps_trainable_spare_channels():
    enc, dec = _haar_wae()
    x = torch.randn(4, 3, 16, 16)
    low, high = enc(x)
    (dec(low, high) - x).pow(2).sum().backward()
    # The 10 channels beyond the +x/-x pairs start unused but not dead: their weights get gradients.
    assert enc.low.weight.grad[:, 6:].abs().sum() > 0 and dec.from_high[6].weight.grad[:, 6:].abs().sum() > 0


def test_edge_correlation(heldout_images):
    x = heldout_images[:64]
    enc, _ = _haar_wae()
    with torch.no_grad():
        haar = edge_correlation(x, enc(x)[1])
    # The Haar split's detail is where the edges are; noise of the same size is not.
    assert haar["gradient"].mean() > 0.4 and haar["lost_detail"].mean() > 0.9
    noise = edge_correlation(x, torch.randn(64, 3, 16, 16))
    assert noise["gradient"].abs().mean() < 0.15 and noise["lost_detail"].abs().mean() < 0.15
    flat = edge_correlation(x[:2], torch.zeros(2, 3, 16, 16))["gradient"]
    assert torch.equal(flat, torch.zeros(2, dtype=torch.float64))
