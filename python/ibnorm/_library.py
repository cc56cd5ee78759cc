"""Finds and loads the operator library (libibn_ops.so, built beside this package by CMake)."""
import os

import torch

from . import _build

_LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), _build.LIBRARY_NAME)
_loaded = False


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def load_library() -> None:
    """Loads the operators once. Raises ImportError, naming both versions, when this PyTorch is
    not the release the library was built against (the C++ ABI differs between releases)."""
    global _loaded
    if _loaded:
        return
    if _major_minor(torch.__version__) != _major_minor(_build.TORCH_VERSION):
        raise ImportError(
            f"ibnorm: this PyTorch is {torch.__version__}, but {_LIBRARY} was built against LibTorch "
            f"{_build.TORCH_VERSION}; rebuild the project (cmake --build build) with the LibTorch that "
            f"matches this PyTorch, or use the PyTorch it was built for")
    if bool(torch._C._GLIBCXX_USE_CXX11_ABI) != _build.CXX11_ABI:
        raise ImportError(
            f"ibnorm: this PyTorch uses the {'new' if torch._C._GLIBCXX_USE_CXX11_ABI else 'old'} C++ ABI, but "
            f"{_LIBRARY} was built with the other one; rebuild against the LibTorch of this PyTorch")
    if not os.path.exists(_LIBRARY):
        raise ImportError(f"ibnorm: the operator library {_LIBRARY} is missing; build the project first "
                          f"(bash scripts/build.sh)")
    try:
        torch.ops.load_library(_LIBRARY)
    except OSError as error:
        raise ImportError(f"ibnorm: cannot load {_LIBRARY}: {error}") from error
    _loaded = True


def library_build() -> dict:
    """What the loaded library was built from: LibTorch, ibn's version and git commit."""
    load_library()
    torch_version, ibn_version, git_commit = torch.ops.ibn.library_build()
    return {"torch_version": torch_version, "ibn_version": ibn_version, "git_commit": git_commit}
