// _core.GGUFFile: the C++ GGUF reader seen from Python (metadata as Python values, tensor infos as
// dicts, tensor bytes as read-only numpy views of the mapping that keep the file mapped).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "bindings/bindings.h"
#include "gguf/gguf.h"

namespace minicpmv::py {
namespace {

using gguf::ValueType;

// Invalid UTF-8 in a corrupt file becomes U+FFFD instead of an exception halfway through a dict.
pyb::str to_str(std::string_view s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!o) throw pyb::error_already_set();
  return pyb::reinterpret_steal<pyb::str>(o);
}

pyb::object array_to_py(const gguf::Value& v) {
  pyb::list out(static_cast<size_t>(v.n));
  for (uint64_t k = 0; k < v.n; ++k) {
    pyb::object item;
    switch (v.elem_type) {
      case ValueType::STRING: item = to_str(v.strings[k]); break;
      case ValueType::ARRAY: item = array_to_py(v.items[k]); break;
      case ValueType::BOOL: item = pyb::bool_(v.elem_int(k) != 0); break;
      case ValueType::FLOAT32: case ValueType::FLOAT64: item = pyb::float_(v.elem_float(k)); break;
      default:
        item = gguf::is_signed_type(v.elem_type) ? pyb::object(pyb::int_(v.elem_int(k)))
                                                 : pyb::object(pyb::int_(v.elem_uint(k)));
    }
    out[static_cast<size_t>(k)] = std::move(item);
  }
  return std::move(out);
}

pyb::object value_to_py(const gguf::Value& v) {
  switch (v.type) {
    case ValueType::UINT8: case ValueType::UINT16: case ValueType::UINT32: case ValueType::UINT64:
      return pyb::int_(v.u);
    case ValueType::INT8: case ValueType::INT16: case ValueType::INT32: case ValueType::INT64:
      return pyb::int_(v.i);
    case ValueType::BOOL: return pyb::bool_(v.i != 0);
    case ValueType::FLOAT32: case ValueType::FLOAT64: return pyb::float_(v.f);
    case ValueType::STRING: return to_str(v.s);
    case ValueType::ARRAY: return array_to_py(v);
  }
  return pyb::none();
}

// "uint32", "string", "array[string]", "array[array[int32]]" (nested: the first item's type).
std::string type_str(const gguf::Value& v) {
  if (v.type != ValueType::ARRAY) return gguf::value_type_name(v.type);
  if (v.elem_type == ValueType::ARRAY)
    return "array[" + (v.items.empty() ? std::string("array") : type_str(v.items[0])) + "]";
  return std::string("array[") + gguf::value_type_name(v.elem_type) + "]";
}

pyb::dict tensor_to_py(const gguf::TensorInfo& t) {
  pyb::dict d;
  d["name"] = to_str(t.name);
  d["type"] = type_name(t.type);
  d["type_id"] = static_cast<uint32_t>(t.type);
  pyb::list shape;
  for (int k = 0; k < t.n_dims; ++k) shape.append(t.ne[k]);
  d["shape"] = shape;
  d["offset"] = t.offset;
  d["nbytes"] = t.nbytes;
  return d;
}

}  // namespace

void bind_gguf(pyb::module_& m) {
  using gguf::File;
  pyb::class_<File, std::shared_ptr<File>>(m, "GGUFFile",
                                           "A GGUF file (v2/v3) mapped read-only; raises FileNotFoundError, "
                                           "OSError or ValueError (corrupt/truncated) on open.")
      .def(pyb::init([](const pyb::object& path) {
             std::string p = pyb::str(pyb::module_::import("os").attr("fspath")(path));
             pyb::gil_scoped_release release;
             return File::open(p);
           }),
           pyb::arg("path"))
      .def_property_readonly("path", &File::path)
      .def_property_readonly("version", &File::version)
      .def_property_readonly("alignment", &File::alignment)
      .def_property_readonly("data_offset", &File::data_offset)
      .def_property_readonly("file_size", &File::file_size)
      .def_property_readonly("architecture",
                             [](const File& f) -> pyb::object {
                               const gguf::Value* v = f.find("general.architecture");
                               if (!v) return pyb::none();
                               return to_str(f.architecture());
                             })
      .def_property_readonly("metadata",
                             [](const File& f) {
                               pyb::dict d;
                               for (const auto& [key, v] : f.metadata()) d[to_str(key)] = value_to_py(v);
                               return d;
                             },
                             "dict key -> value (int, float, bool, str, list), in file order")
      .def_property_readonly("metadata_types",
                             [](const File& f) {
                               pyb::dict d;
                               for (const auto& [key, v] : f.metadata()) d[to_str(key)] = type_str(v);
                               return d;
                             },
                             "dict key -> GGUF value type: 'uint32', 'string', 'array[string]', ...")
      .def("metadata_value",
           [](const File& f, const std::string& key) -> pyb::object {
             const gguf::Value* v = f.find(key);
             if (!v) throw pyb::key_error(key);
             return value_to_py(*v);
           },
           pyb::arg("key"), "one metadata value (KeyError when absent)")
      .def_property_readonly("tensors",
                             [](const File& f) {
                               pyb::list out;
                               for (const gguf::TensorInfo& t : f.tensors()) out.append(tensor_to_py(t));
                               return out;
                             },
                             "list of {name, type, type_id, shape (ggml ne order), offset (in the data section), nbytes}")
      .def("tensor_bytes",
           [](const std::shared_ptr<File>& self, const std::string& name) {
             const gguf::TensorInfo& t = self->tensor(name);
             // The array's base owns a reference to the File: the mapping outlives the view.
             auto* keep = new std::shared_ptr<File>(self);
             pyb::capsule base(keep, [](void* p) { delete static_cast<std::shared_ptr<File>*>(p); });
             pyb::array arr(pyb::dtype::of<uint8_t>(), {static_cast<pyb::ssize_t>(t.nbytes)}, {pyb::ssize_t{1}},
                            t.data, base);
             arr.attr("setflags")(pyb::arg("write") = false);  // the mapping is PROT_READ
             return arr;
           },
           pyb::arg("name"), "read-only numpy uint8 view of a tensor's bytes in the mapping")
      .def("__repr__", [](const File& f) {
        return "<GGUFFile '" + f.path() + "' v" + std::to_string(f.version()) + ", " +
               std::to_string(f.metadata().size()) + " keys, " + std::to_string(f.tensors().size()) + " tensors>";
      });
}

}  // namespace minicpmv::py
