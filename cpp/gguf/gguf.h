// GGUF reader over mmap (versions 2 and 3). Every count, string length, dimension, offset and
// size is checked against the file size before it is used: a truncated or corrupt file throws
// FormatError naming the file and what is wrong. The file is mapped read-only for the File's
// lifetime (tensor data is used in place, never copied); like any mmap reader, a file truncated
// by another process while mapped faults with SIGBUS on access.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "quant/types.h"

namespace minicpmv::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

// Bytes of one scalar of this type; 0 for STRING and ARRAY.
size_t value_type_size(ValueType t);
inline bool is_int_type(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::INT8 || t == ValueType::UINT16 || t == ValueType::INT16 ||
         t == ValueType::UINT32 || t == ValueType::INT32 || t == ValueType::UINT64 || t == ValueType::INT64;
}
inline bool is_signed_type(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 || t == ValueType::INT64;
}
inline bool is_float_type(ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; }

// One metadata value. Scalars are widened into i64 / u64 / f64; strings are views into the map.
// Arrays keep their element type and a view of their raw bytes (strings: offsets of each item).
// Every view points into the File's mapping and lives as long as the File.
struct Value {
  ValueType type = ValueType::UINT8;
  ValueType elem_type = ValueType::UINT8;  // for ARRAY
  int64_t i = 0;       // signed ints, bool
  uint64_t u = 0;      // unsigned ints
  double f = 0;        // floats
  std::string_view s;  // STRING
  uint64_t n = 0;      // ARRAY: number of items
  const uint8_t* raw = nullptr;            // ARRAY of numbers: first item (little-endian packed)
  std::vector<std::string_view> strings;   // ARRAY of strings
  std::vector<Value> items;                // ARRAY of arrays: each item is itself an ARRAY value

  // Item k of an ARRAY of numbers (k < n; the raw bytes are unaligned, so these copy them out).
  // BOOL items read as 0/1 through elem_int.
  int64_t elem_int(uint64_t k) const;     // signed ints, bool, unsigned that fit in int64 (else throws)
  uint64_t elem_uint(uint64_t k) const;   // unsigned ints (and non-negative signed)
  double elem_float(uint64_t k) const;    // any number type, converted
};

struct TensorInfo {
  std::string name;
  DType type = DType::F32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ggml order: ne[0] is the innermost (contiguous) dimension
  uint64_t offset = 0;           // relative to the data section
  const uint8_t* data = nullptr; // into the mapping
  size_t nbytes = 0;

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }  // for a 2-D weight: output features
  int64_t cols() const { return ne[0]; }                  // input features
  std::string shape_str() const;
};

class File {
 public:
  // Throws FileError (missing/unreadable) or FormatError (not GGUF, truncated, corrupt).
  static std::shared_ptr<File> open(const std::string& path);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  // Metadata, in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  // Typed getters: throw FormatError naming the file and key when missing or of the wrong kind.
  // Integer getters accept any integer type whose value fits.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string_view> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  // With a default when the key is absent (still throws on a wrong type).
  std::string get_string(const std::string& key, const std::string& def) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key, bool def) const;

  std::string architecture() const { return get_string("general.architecture"); }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(const std::string& name) const;
  // Throws FormatError "<file>: tensor '<name>' not found" when absent.
  const TensorInfo& tensor(const std::string& name) const;
  // As tensor(), and checks the shape (ggml order, trailing 1s may be omitted):
  // "<file>: tensor 'x' has shape [a, b], expected [c, d]".
  const TensorInfo& tensor(const std::string& name, std::initializer_list<int64_t> ne) const;

  // Paging hints for the mapped bytes of a tensor (or of every tensor); failures are ignored.
  // willneed: start reading ahead now (before a pass over the weights).
  // dontneed: drop the pages from this process (after the weights were repacked into our own
  // buffers); reading the tensor again faults them back in from the file.
  void advise_willneed(const TensorInfo& t) const;
  void advise_dontneed(const TensorInfo& t) const;
  void advise_willneed_all() const;

 private:
  File() = default;
  std::string path_;
  uint32_t version_ = 0;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  friend class Parser;
};

}  // namespace minicpmv::gguf
