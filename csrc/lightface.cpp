// Schemas of every lightface op. Kernels live in cpu/*.cpp and cuda/*.cu; autograd and
// fake (meta) kernels are registered from Python (lightface/ops).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// An importable (empty) Python module, so `import lightface._C` loads the op library.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lightface, m) {
}
