// Schemas of every lightface op, in one block. Kernels live in cpu/*.cpp and cuda/*.cu
// (one file per op family and backend); autograd and fake (meta) kernels are registered
// from Python (lightface/ops/_library.py).
//
// Public ops: mfm, mfm_3_2, symmetry_loss, total_variation.
// Private ops (leading underscore): the forward variants that also return what the
// backward needs (the MFM selection masks) and the backward ops themselves, so that
// torch.compile / AOTAutograd see the backward as ops too.
#ifdef LIGHTFACE_PYTHON_MODULE
#include <Python.h>  // first, as Python requires
#endif

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/version.h>

#include <atomic>
#include <vector>

#include "common.h"

#ifdef LIGHTFACE_PYTHON_MODULE
// setup.py's build: an importable (empty) Python module, so `import lightface._C` loads
// the op library. PyMODINIT_FUNC exports the symbol despite -fvisibility=hidden. The
// CMake build is a plain shared library for torch.ops.load_library (no Python needed).
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

#define LIGHTFACE_STR_(x) #x
#define LIGHTFACE_STR(x) LIGHTFACE_STR_(x)

// The torch release whose headers this library is compiled against, as text in the file:
// lightface/ops/_library.py reads it from the bytes before loading the library, since a library
// built for another release (torch keeps no C++ ABI between releases outside its stable ABI)
// fails to load or misbehaves once loaded. `used` keeps it through -O3 and the linker.
#if defined(__GNUC__) || defined(__clang__)
__attribute__((used))
#endif
extern "C" const char lightface_built_against_torch[] =
    "lightface._C built against torch " LIGHTFACE_STR(TORCH_VERSION_MAJOR) "." LIGHTFACE_STR(
        TORCH_VERSION_MINOR) "." LIGHTFACE_STR(TORCH_VERSION_PATCH);

namespace lightface {
namespace {

// Number of distinct threads that at::parallel_for actually uses *inside this library*.
// at::parallel_for is a header template: without -fopenmp at build time it silently runs
// on one thread, whatever at::get_num_threads() says in Python.
int64_t parallel_threads() {
  constexpr int64_t kMaxThreads = 1024;
  std::vector<std::atomic<int>> seen(kMaxThreads);
  at::parallel_for(0, kMaxThreads * 64, 1, [&](int64_t, int64_t) {
    const int t = at::get_thread_num();
    if (t >= 0 && t < kMaxThreads) seen[t].store(1, std::memory_order_relaxed);
  });
  int64_t count = 0;
  for (auto& s : seen) count += s.load();
  return count;
}

}  // namespace
}  // namespace lightface

// A fragment rather than TORCH_LIBRARY, so that a second copy of this library in one
// process (lightface._C and the CMake build's liblightface_ops.so) does not abort it:
// TORCH_LIBRARY allows one block per namespace and defining a schema twice throws, both
// during dlopen, where an exception terminates the process. The second copy keeps the
// first one's schemas and its TORCH_LIBRARY_IMPL kernels (the same code) replace the first
// one's (torch warns once).
TORCH_LIBRARY_FRAGMENT(lightface, m) {
  if (c10::Dispatcher::singleton().findSchema({"lightface::mfm", ""}).has_value()) return;
  // MFM 2/1: max of the first and second halves along dim (ties and NaN: first half wins
  // unless only the second half is NaN).
  m.def("mfm(Tensor x, int dim=1) -> Tensor");
  // -> (out, mask): mask is uint8 with out's shape, 1 where the second half was selected.
  m.def("_mfm_forward(Tensor x, int dim) -> (Tensor, Tensor)");
  m.def("_mfm_backward(Tensor grad, Tensor mask, int dim) -> Tensor");

  // MFM 3/2: cat([max, median]) of the three thirds along dim.
  m.def("mfm_3_2(Tensor x, int dim=1) -> Tensor");
  // -> (out, mask): mask is uint8 with the shape of one third, holding
  // max_index | (median_index << 2) (indices 0..2 of the thirds).
  m.def("_mfm_3_2_forward(Tensor x, int dim) -> (Tensor, Tensor)");
  m.def("_mfm_3_2_backward(Tensor grad, Tensor mask, int dim) -> Tensor");

  m.def("symmetry_loss(Tensor img, str reduction=\"mean\") -> Tensor");
  m.def("_symmetry_loss_backward(Tensor grad, Tensor img, str reduction) -> Tensor");

  m.def("total_variation(Tensor img, str reduction=\"mean\") -> Tensor");
  m.def("_total_variation_backward(Tensor grad, Tensor img, str reduction) -> Tensor");

  // Diagnostics: threads used by at::parallel_for inside this library.
  m.def("_parallel_threads() -> int", &lightface::parallel_threads);
}
