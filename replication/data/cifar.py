"""CIFAR-10/100 from the official python layout: read with a restricted unpickler, verified against the official
checksums (or a pixel fingerprint), downloaded through torchvision on request."""
from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import torch

from .dataset import DataError, Dataset, Normalisation

# Firefly normalises every data set with CIFAR-10's statistics, CIFAR-100 included (FF:main.py, transform_train and
# transform_test), so both readers use them.
CIFAR10_NORMALISATION = Normalisation(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))

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
        "normalisation": CIFAR10_NORMALISATION,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": [("train", "16019d7e3df5f24257cddd939b257f8d")],
        "test": [("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")],
        "label_key": "fine_labels",
        "meta": ("meta", "fine_label_names"),
        "normalisation": CIFAR10_NORMALISATION,  # Firefly's choice (above), not CIFAR-100's own statistics
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
                   torch.from_numpy(te_y), classes, spec["normalisation"],
                   {"source": os.path.abspath(folder), "verification": checks})


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
