// pybind11 module editrl_engine._C: binds the CPU kernels by raw pointers, sizes and strides (no torch C++ API).
#include <pybind11/pybind11.h>

#include <string>

namespace py = pybind11;

static std::string build_info() {
  std::string info = "C++17";
#ifdef EDITRL_OPENMP
  info += ", OpenMP " + std::to_string(_OPENMP);
#else
  info += ", no OpenMP";
#endif
#ifdef EDITRL_CUDA
  info += ", CUDA sources";
#endif
  return info;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "editrl_engine CPU kernels";
  m.def("build_info", &build_info, "compiler features this extension was built with");
}
