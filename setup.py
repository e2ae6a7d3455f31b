"""Build lightface and its compiled op library ``lightface._C``.

CUDA is used when torch was built with CUDA and ``CUDA_HOME`` is found, or when
``FORCE_CUDA=1`` (compile-only builds on machines without a GPU). ``DEBUG=1`` gives
an unoptimised build with debug symbols.

The dependencies are computed here (pyproject's ``dynamic = ["dependencies"]``): a build
requires the torch release it compiles ``lightface._C`` against, the sdist any torch it can be
compiled against (see :func:`torch_requirement`).
"""
import glob
import os
import sys

from setuptools import setup
from torch.utils import cpp_extension
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"
FORCE_CUDA = os.environ.get("FORCE_CUDA", "0") == "1"
WITH_CUDA = (torch.version.cuda is not None and CUDA_HOME is not None) or FORCE_CUDA


def limited_api_tag():
    """The stable-ABI wheel tag (``cp39``, ``cp310``, ...) matching the ``Py_LIMITED_API`` that torch
    compiles a ``py_limited_api`` extension with: its ``min_supported_cpython`` (0x03090000 in torch
    2.8, the last release for Python 3.9; 0x030A0000 in 2.13). None where this torch has none (it then
    defines no Py_LIMITED_API): the extension is built for the running Python only. A fixed tag is
    wrong one way or the other: cp310 cannot be built or installed on Python 3.9 (setuptools refuses
    the tag), cp39 would let Python 3.9 load a library compiled for the 3.10 API."""
    hexversion = getattr(cpp_extension, "min_supported_cpython", None)
    if hexversion is None:
        return None
    version = int(hexversion, 16)
    return f"cp{version >> 24}{(version >> 16) & 0xFF}"


LIMITED_API = limited_api_tag()

#: the torch releases lightface builds and runs with (the sdist's requirement)
TORCH_RANGE = "torch>=2.4"
DEPENDENCIES = [
    "numpy>=1.23",
    "insightface>=0.7.3",
    "onnx>=1.15",
    "onnxruntime>=1.16",
    "albumentations>=1.4",
    "lmdb>=1.4",
    "scikit-image>=0.21",
    "scikit-learn>=1.3",
    "scipy>=1.10",
    "tqdm>=4.60",
    "pyyaml>=6.0",
    "matplotlib>=3.7",
    "pillow>=9.0",
]


def torch_requirement(argv=None):
    """The torch requirement of what this run of setup.py makes.

    ``lightface._C`` uses torch's full C++ API (ATen, c10, the dispatcher), whose ABI torch keeps
    for no two releases, patch releases included; only extensions written against torch's stable
    ABI (``torch/csrc/stable``) may run on another release. So every build that compiles the library
    (a wheel, an editable or a plain install, and the metadata pip reads before building them:
    ``dist_info``, ``egg_info``) requires exactly the torch release of the build environment, as
    torchvision's wheels do (``torch==2.13.0``: any build of that release, CPU or CUDA, the local
    ``+cpu`` label left out). The sdist, which compiles the library where it is installed, keeps
    :data:`TORCH_RANGE`.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "sdist" in argv:
        return TORCH_RANGE
    return f"torch=={str(torch.__version__).split('+')[0]}"  # the public version: 2.13.0+cpu -> 2.13.0


def sources(pattern):
    return sorted(glob.glob(os.path.join("csrc", pattern)))


def extension():
    cpp_sources = sources("*.cpp") + sources(os.path.join("cpu", "*.cpp"))
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    # No -std flag: torch.utils.cpp_extension picks the C++ standard its headers need
    # (C++20 since torch 2.13). py_limited_api=True makes it define Py_LIMITED_API.
    # -g0 cancels the -g that Python's own CFLAGS add.
    cxx = ["-O0", "-g"] if DEBUG else ["-O3", "-DNDEBUG", "-g0"]
    cxx += ["-fvisibility=hidden", "-Wno-unknown-pragmas"] + openmp
    extra_compile_args = {"cxx": cxx}
    define_macros = [("LIGHTFACE_PYTHON_MODULE", None)]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if WITH_CUDA:
        # No --use_fast_math: the kernels must keep IEEE NaN semantics (NaN propagation).
        nvcc = ["-O0", "-g", "-G"] if DEBUG else ["-O3", "-DNDEBUG"]
        extra_compile_args["nvcc"] = nvcc + ["-Xcompiler", "-fvisibility=hidden"]
        define_macros.append(("WITH_CUDA", None))
        return CUDAExtension(
            "lightface._C",
            cpp_sources + sources(os.path.join("cuda", "*.cu")),
            include_dirs=include_dirs,
            extra_compile_args=extra_compile_args,
            extra_link_args=openmp,
            define_macros=define_macros,
            py_limited_api=LIMITED_API is not None,
        )
    return CppExtension(
        "lightface._C",
        cpp_sources,
        include_dirs=include_dirs,
        extra_compile_args=extra_compile_args,
        extra_link_args=openmp,
        define_macros=define_macros,
        py_limited_api=LIMITED_API is not None,
    )


ext = extension()
print(
    f"lightface build: torch {torch.__version__}, cuda={'yes' if WITH_CUDA else 'no'} "
    f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME}, FORCE_CUDA={int(FORCE_CUDA)}, "
    f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '')}), debug={int(DEBUG)}, "
    f"sources={len(ext.sources)}, stable ABI={LIMITED_API or 'no'}, requires {torch_requirement()}",
    flush=True,
)

setup(
    install_requires=[torch_requirement(), *DEPENDENCIES],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": LIMITED_API}} if LIMITED_API else {},
)
