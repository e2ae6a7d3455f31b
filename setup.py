"""Build lightface and its compiled op library ``lightface._C``.

CUDA is used when torch was built with CUDA and ``CUDA_HOME`` is found, or when
``FORCE_CUDA=1`` (compile-only builds on machines without a GPU). ``DEBUG=1`` gives
an unoptimised build with debug symbols.
"""
import glob
import os
import sys

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"
FORCE_CUDA = os.environ.get("FORCE_CUDA", "0") == "1"
WITH_CUDA = (torch.version.cuda is not None and CUDA_HOME is not None) or FORCE_CUDA


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
            py_limited_api=True,
        )
    return CppExtension(
        "lightface._C",
        cpp_sources,
        include_dirs=include_dirs,
        extra_compile_args=extra_compile_args,
        extra_link_args=openmp,
        define_macros=define_macros,
        py_limited_api=True,
    )


ext = extension()
print(
    f"lightface build: torch {torch.__version__}, cuda={'yes' if WITH_CUDA else 'no'} "
    f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME}, FORCE_CUDA={int(FORCE_CUDA)}, "
    f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '')}), debug={int(DEBUG)}, "
    f"sources={len(ext.sources)}",
    flush=True,
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
