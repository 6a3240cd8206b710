// pybind11 module editrl_engine._C: binds the CPU kernels by raw pointers, sizes and strides (no torch C++ API).
// From Python a row view is (data_ptr, row_stride) or None, a vector is data_ptr or None (see cpp_launchers.py).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "kernels.h"

namespace py = pybind11;

namespace pybind11::detail {

template <class T>
struct type_caster<editrl::RowView<T>> {
  PYBIND11_TYPE_CASTER(editrl::RowView<T>, const_name("tuple[int, int] | None"));
  bool load(handle src, bool) {
    value = {};
    if (src.is_none()) return true;
    if (!isinstance<tuple>(src) || len(src) != 2) return false;
    const auto pair = reinterpret_borrow<tuple>(src);
    value.data = reinterpret_cast<T*>(pair[0].cast<std::uintptr_t>());
    value.stride = pair[1].cast<int64_t>();
    return true;
  }
};

template <class T>
struct type_caster<editrl::VecView<T>> {
  PYBIND11_TYPE_CASTER(editrl::VecView<T>, const_name("int | None"));
  bool load(handle src, bool) {
    value = {};
    if (src.is_none()) return true;
    if (!isinstance<int_>(src)) return false;
    value.data = reinterpret_cast<T*>(src.cast<std::uintptr_t>());
    return true;
  }
};

}  // namespace pybind11::detail

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
  using namespace editrl;
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  m.doc() = "editrl_engine CPU kernels";
  m.def("build_info", &build_info, "compiler features this extension was built with");
  py::enum_<SDEKind>(m, "SDEKind").value("flow_grpo", SDEKind::flow_grpo).value("cps", SDEKind::cps);
  m.def("group_advantages", &group_advantages, no_gil);
  m.def("sde_step", &sde_step, no_gil);
  m.def("sde_logprob_forward", &sde_logprob_forward, no_gil);
  m.def("sde_logprob_backward", &sde_logprob_backward, no_gil);
  m.def("nft_loss_forward", &nft_loss_forward, no_gil);
  m.def("nft_loss_backward", &nft_loss_backward, no_gil);
  m.def("nft_optimality", &nft_optimality, no_gil);
  m.def("grpo_loss_forward", &grpo_loss_forward, no_gil);
  m.def("grpo_loss_backward", &grpo_loss_backward, no_gil);
  m.def("cfg_combine_forward", &cfg_combine_forward, no_gil);
  m.def("cfg_combine_backward", &cfg_combine_backward, no_gil);
}
