"""CIFAR-10/100 held in memory as uint8 tensors, verified, with batched on-tensor augmentation.

The whole split lives in memory (CIFAR-10 train = 150 MB of uint8); crop and flip are applied to whole batches,
so the data pipeline stays off the training loop's critical path (see docs/performance.md and `make bench`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from dataclasses import dataclass, field

import numpy as np
import torch

# Firefly's normalisation, used for CIFAR-10 and CIFAR-100 alike (Firefly code, paper-facts.md).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CROP_PADDING = 4  # Firefly: RandomCrop(32, padding=4)

# Official per-file md5 of the python layout (cs.toronto.edu/~kriz/cifar.html, as checked by torchvision).
OFFICIAL = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                  ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                  ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                  ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                  ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")],
        "test": [("test_batch", "40351d587109b95175f43aff81a1287e")],
        "label_key": "labels",
        "meta": ("batches.meta", "label_names"),
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": [("train", "16019d7e3df5f24257cddd939b257f8d")],
        "test": [("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")],
        "label_key": "fine_labels",
        "meta": ("meta", "fine_label_names"),
    },
}

# sha256 of each CIFAR-10 batch's uint8 NHWC pixel array (C order): accepts re-packed pickles whose md5 differs
# but whose pixels are the official ones (../shared/data/cifar10-lossless/load_cifar10_lossless.py).
PIXEL_SHA256 = {
    ("cifar10", "data_batch_1"): "fc115a3de050d667b88cbd5b0b9612ebf996c54230fe7758f3a14bb5af9a1c27",
    ("cifar10", "data_batch_2"): "89e609b642f687bc796fa3bfa4211005582a0e8131d463d996d11ddb297d312e",
    ("cifar10", "data_batch_3"): "93a365823e61729490a8801d80864ccd0ab1e8c98f19d71af65644d1c5f1486e",
    ("cifar10", "data_batch_4"): "809eb95ecd057a36516318f5023ea619009dd70dd38193db9da43125a928e6fa",
    ("cifar10", "data_batch_5"): "d05b7d66d216d6df882cc760cdc0ff2f1f0437abf699ed16005c021ef0add9cb",
    ("cifar10", "test_batch"): "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(RuntimeError):
    """Data missing or damaged; the message says what to do. The CLI prints it without a traceback."""


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # (N, 3, 32, 32) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    provenance: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> "Dataset":
        """The same data set with its tensors on `device` (uint8: 150 MB for CIFAR's 50,000 + 10,000 images), so
        that batches are cut, augmented and normalised there (train_batches)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in
                                            ("train_x", "train_y", "test_x", "test_y")})


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _missing_message(name: str, root: str, missing: str) -> str:
    folder = OFFICIAL[name]["folder"]
    pretty = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]
    offline = ""
    if name == "cifar10":
        offline = ("\n  - offline, from the project's shared copy: python ../shared/data/make_cifar10.py "
                   f"{root}")
    return (f"{pretty} not found: {missing}\n"
            f"Expected the official python layout in {os.path.join(root, folder)}/. Either:\n"
            f"  - download it (network needed): add --download to the command (uses torchvision), or\n"
            f"  - extract the official '{pretty} python version' archive into {root}/"
            f"{offline}\n"
            f"The data dir is set by --data-dir or the REPLICATION_DATA environment variable (now {root!r}).")


class UnsafePickle(pickle.UnpicklingError):
    pass


# The only globals the CIFAR python files reference (protocol 2 from Python 2, or a re-pack from Python 3).
_NUMPY_GLOBALS = {("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}
_DTYPES = {np.dtype(np.uint8), np.dtype(np.int64), np.dtype(np.int32)}  # pixels, and labels stored as arrays


def _checked_dtype(*args, **kwargs):
    dtype = np.dtype(*args, **kwargs)
    if dtype not in _DTYPES:
        raise UnsafePickle(f"an array of dtype {dtype}")
    return dtype


class _CifarUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, str, bytes, ints and numpy arrays of the official dtypes: any other global a
    pickle asks for (os.system, say) is refused before anything is called."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("numpy", "dtype"):
            return _checked_dtype
        raise UnsafePickle(f"{module}.{name}")


def _unpickle(path: str, name: str):
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except UnsafePickle as exc:
        raise DataError(f"{path} is not an official {name} file: its pickle asks for {exc}, which the official "
                        f"files never contain. Refused; nothing in it was run. Delete {os.path.dirname(path)} and "
                        f"fetch {name} again (--download).") from None
    except Exception as exc:  # truncated or otherwise unreadable
        raise DataError(f"{path} is truncated or corrupted ({type(exc).__name__}: {exc}).\n"
                        f"Delete {os.path.dirname(path)} and fetch {name} again (--download).") from None


def _read_batch(path: str, label_key: str, name: str, file: str) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path, name)
    try:
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as exc:  # a wrong structure or shape means the file is damaged
        raise DataError(f"{path} is truncated or corrupted ({type(exc).__name__}: {exc}).\n"
                        f"Delete {os.path.dirname(path)} and fetch {name} again (--download).") from None
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels; the file is corrupted. "
                        f"Delete it and fetch {name} again.")
    return x, y


def _verify(name: str, file: str, path: str, x: np.ndarray, official_md5: str) -> str:
    """Return how the file was verified; raise DataError when neither check passes."""
    if _md5(path) == official_md5:
        return "official-md5"
    want = PIXEL_SHA256.get((name, file))
    if want is not None:
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        if hashlib.sha256(nhwc.tobytes()).hexdigest() == want:
            return "pixel-sha256"
    raise DataError(f"{path} does not match the official {name} file (md5 differs"
                    f"{' and pixel fingerprint differs' if want else ''}): corrupted or not the official data.\n"
                    f"Delete {os.path.dirname(path)} and fetch it again (--download), or pass --no-verify "
                    f"to use it anyway (recorded as unverified in the results).")


def _download(name: str, root: str) -> None:
    import torchvision  # only here: torchvision import costs seconds and is not needed otherwise

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        cls(root, train=True, download=True)
    except Exception as exc:
        raise DataError(f"Downloading {name} into {root} failed ({type(exc).__name__}: {exc}).\n"
                        f"Without network, place the official files there by hand (see README, 'Data').") from None


def load_cifar(name: str, root: str, download: bool = False, verify: bool = True) -> Dataset:
    """Read CIFAR-10 or CIFAR-100 from the official python layout under `root`."""
    spec = OFFICIAL[name]
    folder = os.path.join(root, spec["folder"])
    files = spec["train"] + spec["test"]
    absent = [f for f, _ in files if not os.path.isfile(os.path.join(folder, f))]
    if absent and download:
        _download(name, root)
        absent = [f for f, _ in files if not os.path.isfile(os.path.join(folder, f))]
    if absent:
        raise DataError(_missing_message(name, root, f"{', '.join(absent)} absent from {folder}"))

    checks, parts = {}, {"train": [], "test": []}
    for split in ("train", "test"):
        for file, md5 in spec[split]:
            path = os.path.join(folder, file)
            x, y = _read_batch(path, spec["label_key"], name, file)
            checks[file] = _verify(name, file, path, x, md5) if verify else "unverified"
            parts[split].append((x, y))
    meta_file, meta_key = spec["meta"]
    classes = _read_classes(os.path.join(folder, meta_file), meta_key, name)
    (trx, tr_y), (tex, te_y) = [tuple(np.concatenate(a) for a in zip(*parts[s])) for s in ("train", "test")]
    return Dataset(name, torch.from_numpy(trx), torch.from_numpy(tr_y), torch.from_numpy(tex),
                   torch.from_numpy(te_y), classes, {"source": os.path.abspath(folder), "verification": checks})


def _read_classes(path: str, key: str, name: str) -> tuple[str, ...]:
    if os.path.isfile(path):
        meta = _unpickle(path, name)
        try:
            return tuple(meta[key])
        except Exception as exc:
            raise DataError(f"{path} is truncated or corrupted ({type(exc).__name__}: {exc}). Delete it and fetch "
                            f"{name} again (--download).") from None
    if name == "cifar10":
        return CIFAR10_CLASSES
    return tuple(f"class_{i}" for i in range(100))


def synthetic_cifar(num_classes: int = 10, train_per_class: int = 100, test_per_class: int = 50,
                    seed: int = 0) -> Dataset:
    """A learnable CIFAR-shaped data set: each class is a smooth random colour pattern plus noise and a shift.

    Seeded and cheap; any number of classes (100 stands in for CIFAR-100, whose pixels are not available here).
    """
    g = torch.Generator().manual_seed(seed)
    # Class prototypes: low-frequency patterns (8x8 upsampled) so a small conv net separates them.
    protos = torch.rand(num_classes, 3, 8, 8, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=32, mode="bilinear", align_corners=False)

    def sample(per_class):
        y = torch.arange(num_classes).repeat_interleave(per_class)
        x = protos[y] + 0.25 * torch.randn(len(y), 3, 32, 32, generator=g)
        shifts = torch.randint(-3, 4, (len(y), 2), generator=g)
        x = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2)) for img, s in zip(x, shifts)])
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    trx, tr_y = sample(train_per_class)
    tex, te_y = sample(test_per_class)
    classes = tuple(f"class_{i}" for i in range(num_classes))
    return Dataset("synthetic", trx, tr_y, tex, te_y, classes,
                   {"source": "synthetic", "seed": seed, "verification": "generated"})


def stratified_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` examples of every class, drawn with a seeded permutation, in ascending order."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    chosen = []
    for c in labels.unique().tolist():
        idx = perm[labels[perm] == c]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} examples; asked for {per_class}")
        chosen.append(idx[:per_class])
    return torch.cat(chosen).sort().values


def load_dataset(cfg) -> Dataset:
    """The data set a config asks for, subset as the config says (subsets are seeded independently of the run)."""
    if cfg.dataset == "synthetic":
        ds = synthetic_cifar(cfg.synthetic_classes, cfg.synthetic_train_per_class, cfg.synthetic_test_per_class)
    else:
        ds = load_cifar(cfg.dataset, cfg.data_dir, download=cfg.download, verify=cfg.verify_data)
    # Subsets use a fixed seed (not the run seed) so every seed of a study sees the same images.
    if cfg.train_per_class is not None:
        idx = stratified_subset(ds.train_y, cfg.train_per_class, seed=1234)
        ds.train_x, ds.train_y = ds.train_x[idx], ds.train_y[idx]
    if cfg.test_per_class is not None:
        idx = stratified_subset(ds.test_y, cfg.test_per_class, seed=4321)
        ds.test_x, ds.test_y = ds.test_x[idx], ds.test_y[idx]
    ds.provenance = {**ds.provenance, "train_size": len(ds.train_y), "test_size": len(ds.test_y)}
    return ds


# ----------------------------------------------------------------------------------------------------------------
# Batched pipeline
# ----------------------------------------------------------------------------------------------------------------
def normalise(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float, scaled and standardised, on the images' device (IEEE division and subtraction: the
    same values on any device)."""
    mean = torch.tensor(CIFAR_MEAN, device=x_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=x_uint8.device).view(1, 3, 1, 1)
    return (x_uint8.float().div_(255) - mean) / std


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int = CROP_PADDING) -> torch.Tensor:
    """Crop (zero padding) at offsets (dy, dx) and flip where `flip`, for a whole uint8 batch (B, 3, H, W) at once,
    on the batch's device: an exact gather, so every device gives the same pixels.

    The result has shape (B, 3, H, W) in channels_last memory order, the layout training feeds the model, so no
    copy is needed later; every element operation downstream gives the same values in either layout."""
    b, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None, None]  # (B, H, 1, 1)
    cols = dx[:, None] + torch.arange(w, device=dev)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :, None]  # (B, 1, W, 1); flip = read backwards
    nhwc = padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, None, None, :],
                  rows, cols]
    return nhwc.permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W), channels_last strides


def _draw_crop_flip(b: int, generator: torch.Generator, padding: int):
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    return dy, dx, flip


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """Random crop (zero padding) and horizontal flip of a uint8 batch; the draws come from the CPU `generator`."""
    dy, dx, flip = (t.to(x.device) for t in _draw_crop_flip(len(x), generator, padding))
    return crop_flip(x, dy, dx, flip, padding)


def epoch_plan(n: int, batch_size: int, generator: torch.Generator, augment: bool = True, drop_last: bool = False,
               limit: int | None = None, padding: int = CROP_PADDING) -> list[tuple]:
    """Every random draw of one pass, made up front on the CPU generator in the order the batches use them (the
    permutation, then each batch's crop rows, crop columns and flips): [(indices, dy, dx, flip)], the last three
    None without augmentation. Drawing ahead changes no value, since nothing else draws from the generator
    during a pass, and it lets a device-resident pass run without a host round trip per batch."""
    perm = torch.randperm(n, generator=generator)
    if limit is not None:
        perm = perm[:limit]
    m = len(perm)
    stop = m - m % batch_size if drop_last else m
    plan = []
    for start in range(0, stop, batch_size):
        idx = perm[start:start + batch_size]
        plan.append((idx, *(_draw_crop_flip(len(idx), generator, padding) if augment else (None,) * 3)))
    return plan


def _to_device(plan: list[tuple], device: torch.device) -> list[tuple]:
    """The plan's index tensors on `device` in one copy per kind (not four small copies per batch)."""
    if device.type == "cpu" or not plan:
        return plan
    sizes = [len(p[0]) for p in plan]
    columns = []
    for k in range(4):
        if plan[0][k] is None:
            columns.append([None] * len(plan))
        else:
            columns.append(list(torch.cat([p[k] for p in plan]).to(device, non_blocking=True).split(sizes)))
    return list(zip(*columns))


def train_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator,
                  augment: bool = True, drop_last: bool = False, limit: int | None = None):
    """Shuffled, augmented, normalised float batches on the device where `x` and `y` live (the uint8 data set may
    sit on a GPU: `Dataset.to`); deterministic given the generator's state, and the same draws on every device."""
    plan = _to_device(epoch_plan(len(y), batch_size, generator, augment, drop_last, limit), x.device)
    for idx, dy, dx, flip in plan:
        xb = x[idx]
        if augment:
            xb = crop_flip(xb, dy, dx, flip)
        yield normalise(xb), y[idx]


def eval_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    for start in range(0, len(y), batch_size):
        yield normalise(x[start:start + batch_size]), y[start:start + batch_size]
