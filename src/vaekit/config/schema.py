"""The config tree's schema: one typed dataclass per section (STYLE.md, habit 3). Reading, overriding and checking a
config live in `load.py` and `checks.py`, which import this module and nothing imports back.

Every part a config names (encoder, decoder, kind, likelihood, prior, posterior, block, objective) is a registry
name, so a new entry needs no edit here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

CONFIG_VERSION = 2  # 2: objective.name (a registry name) replaces iw_samples > 1 and objective.estimator


@dataclass
class DataConfig:
    name: str = "mnist"  # a built-in name, a .npy/.npz file or a folder of images
    data_dir: str | None = None  # explicit folder for the data set's files
    val_size: int | None = None  # fixed-seed hold-out carved from the training split; 0 = none;
    # null = none for built-in sets (they have a test split), 5% (at most 5,000) for user data without one
    val_seed: int = 0
    mmap: bool = False  # memory-map a uint8 .npy instead of reading it: for data larger than memory
    lazy: bool = False  # read a folder of images by index, in background threads, instead of all at once
    channels: int | None = None  # image folders: 1 (grey) or 3 (RGB); null: RGB if any image is colour
    image_size: int | None = None  # image folders: resize the shorter side to this and crop the centre square
    hflip: bool = False  # random horizontal flips of training batches (never at evaluation)
    noise: float = 0.0  # replace this fraction of training pixels by uniform noise (a background model, Ren et al.)
    # Long-tailed data and its remedies (data/imbalance.py); every one needs class labels.
    imbalance: float | None = None  # make the training split long-tailed: largest / smallest class (>= 1); null = as is
    imbalance_profile: Literal["exponential", "balanced"] = "exponential"  # balanced: the same total, evenly spread
    imbalance_seed: int = 0  # which images each class keeps
    sampler: Literal["shuffle", "balanced", "sqrt"] = "shuffle"  # balanced: each class equally likely per draw;
    # sqrt: a class drawn in proportion to the square root of its count (Kang et al. 2020)
    class_weights: Literal["none", "inverse", "sqrt-inverse", "effective"] = "none"  # the loss per example weighted
    # by its class: 1 / n_c, 1 / sqrt(n_c) or 1 / effective number (Cui et al. 2019); mean 1 over the training set
    class_weights_beta: float = 0.9999  # effective: E_c = (1 - beta^n_c) / (1 - beta) (Cui et al.'s long-tailed CIFAR)


@dataclass
class VqConfig:
    """A VQ model's quantizer and code prior (model.kind: vq; models/vq.py, quantizers.py, code_priors.py)."""

    quantizer: str = "vq"  # registry name: vq (a learned codebook), fsq (finite scalar quantization)
    codebook_size: int = 512  # vq: codes K (van den Oord et al. 2017 use 512)
    code_dim: int = 64  # vq: width d of each code vector
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # fsq: levels per channel, K = their product
    # (Mentzer et al. 2023, Table 1: [8, 5, 5, 5] for K = 1,000)
    decay: float = 0.99  # vq: EMA decay of the codebook (van den Oord et al., App. A.1: 0.99)
    dead_threshold: float = 1.0  # vq: a code whose EMA count per batch falls below this is restarted; 0 = never
    kmeans_iters: int = 10  # vq: k-means iterations on the first training batch; 0 = random initial codes
    gradient: Literal["ste", "rotation"] = "ste"  # the encoder's gradient through the quantizer: straight-through
    # or the rotation trick (Fifty et al. 2024)
    code_prior: Literal["pixelcnn", "uniform"] = "pixelcnn"  # p(codes): a gated PixelCNN over the grid (trained as
    # a second player), or uniform (log K nats per position)
    prior_channels: int = 64  # pixelcnn: channels of each gated layer
    prior_layers: int = 8  # pixelcnn: gated layers
    prior_kernel: int = 5  # pixelcnn: kernel width (pythae's PixelCNN: 10 masked layers of kernel 5)
    prior_lr: float = 1e-3  # pixelcnn: the code prior's Adam learning rate


@dataclass
class ModelConfig:
    encoder: str = "mlp"  # registry name: mlp, conv, resnet; custom: your own nn.Module (VAE(cfg, encoder=...))
    decoder: str = "mlp"  # registry name, as the encoder
    hidden: list[int] = field(default_factory=lambda: [400])  # encoder widths (mlp) / channels (conv)
    decoder_hidden: list[int] | None = None  # None mirrors `hidden`
    activation: Literal["relu", "tanh", "elu", "silu", "leaky_relu"] = "relu"
    latent_dim: int = 20
    likelihood: str = "bernoulli"  # registry name: bernoulli, gaussian, discretized-logistic, logistic-mixture
    mixture_components: int = 5  # logistic-mixture: logistics per pixel
    gaussian_scale: Literal["global", "pixel"] = "global"
    min_scale: float = 1e-3  # floor of a learned Gaussian scale
    logvar_min: float = -12.0  # soft clamp of the posterior log-variance
    logvar_max: float = 8.0
    scale_param: Literal["exp", "softplus"] = "exp"  # Gaussian scales: exp(raw / 2), or softplus(raw) (Efficient-VDVAE)
    posterior_offset_max: float | None = None  # hierarchy: |d_mean| and |d_logvar| of q against p softly bounded
    prior: str = "standard-normal"  # registry name: standard-normal, mog, vamp (over the top group)
    prior_components: int = 10  # mog: Gaussians in the mixture; vamp: pseudo-inputs
    posterior: str = "gaussian"  # registry name: gaussian, iaf (a flow on top of the Gaussian; kind vae only)
    flow_steps: int = 2  # iaf: MADE transforms
    flow_hidden: int = 320  # iaf: MADE width
    flow_context: int = 32  # iaf: extra encoder outputs h fed to every step
    # Hierarchical (kind: hierarchical): a bottom-up pass, then a top-down pass over `groups`.
    kind: str = "vae"  # registry name: vae, hierarchical, vq (discrete codes on a grid: models/vq.py)
    block: str = "mlp"  # registry name of the hierarchy's network: mlp, resconv
    groups: list[int] = field(default_factory=list)  # latent size (mlp) or channels (resconv) per group, top first
    group_hidden: list[int] = field(default_factory=lambda: [100, 100])  # mlp: widths between two groups
    group_scales: list[int] = field(default_factory=list)  # resconv: downsampling factor per group, top first
    width: int = 64  # resconv: channels of the residual stream
    res_blocks: int = 2  # resconv and resnet: residual blocks per resolution
    conditional: bool = False  # a conditional VAE (Sohn et al. 2015): encoder and decoder also see the class label
    num_classes: int | None = None  # conditional: filled in from the data's labels at train time
    input_shape: list[int] | None = None  # (C, H, W); filled in from the data at train time
    vq: VqConfig = field(default_factory=VqConfig)  # kind vq: the quantizer and the code prior


@dataclass
class ObjectiveConfig:
    name: str = "elbo"  # registry name: elbo, iwae, dreg, ae, adversarial (vaekit objectives lists them)
    beta: float = 1.0  # KL weight after any schedule has finished
    kl_schedule: Literal["constant", "linear", "cyclical", "sigmoid"] = "constant"
    kl_warmup_steps: int = 0  # length of the linear/sigmoid ramp, or of one cycle
    kl_cycles: int = 4  # cyclical schedule (Fu et al. 2019): number of cycles
    kl_ramp_fraction: float = 0.5  # cyclical: fraction of a cycle spent ramping up
    free_bits: float = 0.0  # nats per latent dimension (Kingma et al. 2016)
    free_bits_group: float = 0.0  # nats per latent group: its batch-mean KL is not pushed below this
    group_warmup_steps: list[int] = field(default_factory=list)  # per group (top first): a linear KL ramp each
    kl_balance: bool = False  # NVAE's KL balancing across groups while the KL weight is below 1
    spectral_reg: float = 0.0  # NVAE's spectral regularization: lambda * sum of the weights' top singular values
    iw_samples: int = 1  # iwae and dreg: the k of the k-sample bound (Burda et al. 2016)
    commitment: float = 0.25  # vq: weight of ||z_e - sg(z_q)||^2 (van den Oord et al. 2017's beta = 0.25)
    # The generative-autoencoder family (objectives/rae.py, wae.py, beta_tcvae.py, dip_vae.py, annealed.py).
    latent_l2: float = 1e-4  # rae: weight of 1/2 ||z||^2 on the codes (Ghosh et al. 2020's beta; pythae's default)
    decoder_reg: Literal["l2", "gp"] = "l2"  # rae: the decoder's weight decay (RAE-L2) or gradient penalty (RAE-GP)
    decoder_reg_weight: float = 1e-7  # rae: lambda of the decoder regularizer (pythae's default)
    mmd_weight: float = 10.0  # wae-mmd: lambda on MMD(q(z), p(z)) (Tolstikhin et al. 2018: 10 on MNIST); info-vae:
    # its lambda, the MMD's weight being alpha + lambda - 1
    mmd_kernel: Literal["imq", "rbf"] = "imq"  # inverse multiquadric C / (C + |z - z'|^2) or RBF exp(-|z - z'|^2 / C)
    mmd_scales: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0])  # C = 2 D s per
    # scale s, summed (Tolstikhin et al.'s IMQ: C = 2 D sigma_z^2 at sigma_z = 1, over these scales)
    info_alpha: float = 0.0  # info-vae: alpha; the KL's weight is 1 - alpha (Zhao et al. 2019)
    tc_estimator: Literal["stratified", "weighted"] = "stratified"  # beta-tcvae: minibatch stratified (MSS) or
    # weighted (MWS) sampling (Chen et al. 2018); objective.beta weighs the total correlation
    tc_alpha: float = 1.0  # beta-tcvae: weight of the index-code mutual information
    tc_gamma: float = 1.0  # beta-tcvae: weight of the dimension-wise KL
    dataset_size: int | None = None  # beta-tcvae: N, the training split's size (training fills it in)
    dip_kind: Literal["i", "ii"] = "i"  # dip-vae: the covariance of the posterior means (I) or of q(z) (II)
    dip_offdiag: float = 10.0  # dip-vae: lambda_od on the off-diagonal entries (Kumar et al. 2018)
    dip_diag: float | None = None  # dip-vae: lambda_d on (diagonal - 1); null: 10 x lambda_od for I, lambda_od for II
    capacity_max: float = 25.0  # annealed-vae: C_max nats (Burgess et al. 2018, dSprites)
    capacity_steps: int = 100_000  # annealed-vae: steps over which C rises linearly from 0 (Burgess et al.)
    capacity_gamma: float = 1000.0  # annealed-vae: gamma on |KL - C| (Burgess et al., dSprites)
    factor_gamma: float = 10.0  # factor-vae: gamma on the critic's TC estimate (Kim & Mnih 2018; InfoGAN-CR's 10)
    critic_hidden: int = 1000  # factor-vae: the critic's width (Kim & Mnih: 6 layers of 1000, leaky ReLU)
    critic_layers: int = 6
    critic_lr: float = 1e-4  # factor-vae: the critic's Adam (Kim & Mnih: 1e-4, betas 0.5, 0.9)
    critic_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])


@dataclass
class AdversarialConfig:
    """The second player of `objective.name=adversarial`: a discriminator and the terms it adds (models/
    discriminators.py, objectives/adversarial.py). Defaults follow the KL-autoencoder of latent diffusion (Esser et
    al. 2021, taming-transformers vqperceptual.py; Rombach et al. 2022, ldm contperceptual.py) unless noted."""

    discriminator: str = "patch"  # registry name: patch (PatchGAN, n stride-2 layers, any size), small (28x28)
    disc_layers: int = 3  # patch: stride-2 convolutions (taming's n_layers=3)
    disc_channels: int = 64  # width of the first layer, doubled per layer up to 8x (taming's ndf=64)
    disc_norm: Literal["batch", "none"] = "batch"  # taming's NLayerDiscriminator uses BatchNorm
    spectral_norm: bool = False  # spectral normalization of every discriminator layer (Miyato et al. 2018)
    loss: Literal["hinge", "non-saturating"] = "hinge"  # hinge: taming's; non-saturating: Goodfellow et al. 2014
    weight: float = 0.5  # base weight of the generator's adversarial term (ldm kl-f8's disc_weight)
    adaptive: bool = True  # times ||grad L_rec|| / (||grad L_gan|| + 1e-4) at the decoder's last layer, <= 1e4
    disc_start: int = 0  # steps before the discriminator trains and its term counts (ldm's disc_start)
    disc_ramp: int = 0  # steps over which the generator's adversarial weight then rises linearly to `weight`
    pixel_weight: float = 1.0  # weight of -log p(x|z) in the autoencoder's loss (Larsen et al. 2016 use 0)
    feature_weight: float = 0.0  # Larsen et al.'s reconstruction in the discriminator's features (0 = off)
    judge_prior: bool = False  # the discriminator also judges decoded prior samples (Larsen et al.), not only
    # reconstructions (taming judges reconstructions only)
    r1: float = 0.0  # R1 penalty gamma/2 E||grad_x D(x_real)||^2 (Mescheder et al. 2018); 0 = off
    lecam: float = 0.0  # LeCam regularization weight (Tseng et al. 2021; 0.3 in their paper); 0 = off
    lecam_decay: float = 0.99  # the EMA of the discriminator's mean real and fake outputs (lecam-gan's 0.99)
    lr: float | None = None  # the discriminator's learning rate; null = optim.lr
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])  # the discriminator's Adam betas (taming's)
    lpips: str | None = None  # folder with LPIPS's VGG files (vgg16.pth, lpips_vgg.pth); null = no perceptual term
    lpips_weight: float = 1.0  # weight of the LPIPS term (taming's perceptual_weight)
    watch_window: int = 200  # steps over which the discriminator's accuracy is judged (outright win, stalled)
    win_accuracy: float = 0.98  # a mean real-and-fake accuracy above this over the window is an outright win


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio


@dataclass
class GuardConfig:
    clip_grad_norm: float | None = 200.0  # None turns clipping off
    skip_grad_norm: float | None = None  # also skip above this absolute norm (VDVAE's rule); None = never
    skip_outlier: float | None = 20.0  # skip a norm this many times the recent median (and 6 robust sigma out)
    skip_window: int = 100  # recent finite gradient norms the outlier rule judges against
    skip_warmup: int = 25  # steps before the outlier rule judges anything
    skip_nonfinite: bool = True  # skip the update on a NaN/inf loss or gradient
    ema_decay: float = 0.0  # 0 = no EMA of the weights
    # EMA warm-up: the decay at step t is min(ema_decay, 1 - (1 + t) ** -power), so a short run does not
    # average in its initial weights (crowsonkb's EMA warm-up, as diffusers' EMAModel; 3/4 reaches 0.999
    # at 10,000 steps); 0 = the constant ema_decay from the first step
    ema_warmup_power: float = 0.75
    rollback_after: int = 50  # this many skipped steps in a row roll back to the last checkpoint; 0 = never
    rollback_lr_factor: float = 0.5  # each rollback multiplies the learning rate by this ...
    rollback_clip_factor: float = 0.5  # ... and the clip norm by this
    max_rollbacks: int = 3  # one more streak after this many rollbacks stops the run with a diagnosis
    # roll back (the same remedy) when the training loss averaged over loss_window steps (-log p(x|z) + beta KL at
    # the step's KL weight: the -ELBO once a warm-up is over) rises this many nats per data dimension above the
    # lower of the run's first step and its best window; None = never
    loss_rise: float | None = 0.25
    loss_window: int = 25


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: int | None = None  # overrides epochs when set
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    log_every: int = 100  # steps between metrics.jsonl rows
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    checkpoint_minutes: float = 0.0  # also checkpoint after this much wall time since the last one; 0 = off
    # a time budget: end the run (evaluate, export) after this much wall time in the training loop, evaluations
    # included, counted afresh by each process that resumes; schedules still span the planned steps; 0 = off
    max_minutes: float = 0.0
    keep_checkpoints: int = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast, loss terms in fp32; fp16 CUDA only
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | None = None  # torch intra-op threads; None = leave torch's default
    # torch.compile the whole step (forward, backward, guards, Adam): true, false, or auto (on for runs long
    # enough to pay for the compilation); falls back to eager, with a warning, if compiling fails
    compile: Literal["auto", True, False] = "auto"
    channels_last: bool = False  # NHWC memory format for convolutional models (bench/model_speed.py: where it pays)
    # where the uint8 training images live (data/feed.py): device (copied once; batches gathered there), pinned
    # (double-buffered asynchronous copies), host, or auto (device on a GPU when the set fits, else pinned; host on CPU)
    data_placement: Literal["auto", "device", "pinned", "host"] = "auto"
    samples: int = 64  # images in the sample grid written at the end
    tensorboard: bool = True  # also write TensorBoard events when the tensorboard package is installed


@dataclass
class Config:
    version: int = CONFIG_VERSION
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
