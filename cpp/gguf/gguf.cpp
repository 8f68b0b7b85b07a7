// GGUF reader. Layout (little-endian; v2 and v3 are identical, v3 only added big-endian files):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv   x { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to general.alignment (default 32) | data section (tensor offsets are relative to it)
// string = u64 length + bytes (no terminator); array = u32 elem_type + u64 count + items.
//
// Every read goes through Parser::need(), which compares against the bytes left in the file
// before anything is touched, and every count is compared against the smallest size its items
// could have before anything is reserved: a corrupt count fails fast instead of allocating.
#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "minicpmv/error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader reads little-endian files by memcpy and needs a little-endian host"
#endif

namespace minicpmv::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;         // ggml's GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;        // arrays of arrays: bound the recursion, not the data
constexpr uint64_t kDefaultAlignment = 32;

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

// Smallest encoded size of one item of type t: bounds how many items the remaining bytes can hold.
uint64_t min_encoded_size(ValueType t) {
  if (t == ValueType::STRING) return 8;       // u64 length, empty string
  if (t == ValueType::ARRAY) return 4 + 8;    // elem type + count, no items
  return value_type_size(t);
}

std::string quote(std::string_view s) {
  // Names in messages come from the file: keep them short and printable.
  std::string out = "'";
  size_t n = std::min<size_t>(s.size(), 80);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > n) out += "...";
  return out + "'";
}

// ggml types this engine has no block layout for (so quant/types.h does not list them): named in
// the error, so that a user with e.g. an IQ2 file knows it is the quantization, not corruption.
const char* other_ggml_type_name(uint32_t id) {
  switch (id) {
    case 16: return "iq2_xxs";
    case 17: return "iq2_xs";
    case 18: return "iq3_xxs";
    case 19: return "iq1_s";
    case 20: return "iq4_nl";
    case 21: return "iq3_s";
    case 22: return "iq2_s";
    case 23: return "iq4_xs";
    case 29: return "iq1_m";
    case 34: return "tq1_0";
    case 35: return "tq2_0";
    case 39: return "mxfp4";
    default: return nullptr;
  }
}

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "uint8";
    case ValueType::INT8: return "int8";
    case ValueType::UINT16: return "uint16";
    case ValueType::INT16: return "int16";
    case ValueType::UINT32: return "uint32";
    case ValueType::INT32: return "int32";
    case ValueType::FLOAT32: return "float32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::UINT64: return "uint64";
    case ValueType::INT64: return "int64";
    case ValueType::FLOAT64: return "float64";
  }
  return "unknown";
}

size_t value_type_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    default: return 0;
  }
}

// ---- Value: items of numeric arrays ----

namespace {
// Reads item k of a numeric array as whichever of int64/uint64/double holds it exactly.
struct Num {
  bool is_float = false, is_signed = false;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
};

Num read_num(ValueType t, const uint8_t* p) {
  Num r;
  switch (t) {
    case ValueType::UINT8: r.u = load<uint8_t>(p); break;
    case ValueType::UINT16: r.u = load<uint16_t>(p); break;
    case ValueType::UINT32: r.u = load<uint32_t>(p); break;
    case ValueType::UINT64: r.u = load<uint64_t>(p); break;
    case ValueType::INT8: r.is_signed = true; r.i = load<int8_t>(p); break;
    case ValueType::INT16: r.is_signed = true; r.i = load<int16_t>(p); break;
    case ValueType::INT32: r.is_signed = true; r.i = load<int32_t>(p); break;
    case ValueType::INT64: r.is_signed = true; r.i = load<int64_t>(p); break;
    case ValueType::BOOL: r.is_signed = true; r.i = load<uint8_t>(p) != 0; break;
    case ValueType::FLOAT32: r.is_float = true; r.f = load<float>(p); break;
    case ValueType::FLOAT64: r.is_float = true; r.f = load<double>(p); break;
    default: throw InvalidArgument(std::string("array of ") + value_type_name(t) + " has no numeric items");
  }
  return r;
}

Num item(const Value& v, uint64_t k) {
  if (v.type != ValueType::ARRAY || k >= v.n || !v.raw)
    throw InvalidArgument("array item " + std::to_string(k) + " out of range (array of " + std::to_string(v.n) + ")");
  return read_num(v.elem_type, v.raw + k * value_type_size(v.elem_type));
}
}  // namespace

int64_t Value::elem_int(uint64_t k) const {
  Num x = item(*this, k);
  if (x.is_float) throw InvalidArgument("array of floats read as integers");
  if (x.is_signed) return x.i;
  if (x.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw InvalidArgument("array item " + std::to_string(x.u) + " does not fit in int64");
  return static_cast<int64_t>(x.u);
}

uint64_t Value::elem_uint(uint64_t k) const {
  Num x = item(*this, k);
  if (x.is_float) throw InvalidArgument("array of floats read as integers");
  if (!x.is_signed) return x.u;
  if (x.i < 0) throw InvalidArgument("array item " + std::to_string(x.i) + " is negative");
  return static_cast<uint64_t>(x.i);
}

double Value::elem_float(uint64_t k) const {
  Num x = item(*this, k);
  if (x.is_float) return x.f;
  return x.is_signed ? static_cast<double>(x.i) : static_cast<double>(x.u);
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (int d = 0; d < n_dims; ++d) {
    if (d) s += ", ";
    s += std::to_string(ne[d]);
  }
  return s + "]";
}

// ---- Parser ----

class Parser {
 public:
  explicit Parser(File& f) : f_(f), base_(f.base_), size_(f.size_) {}

  void parse() {
    what_ = "the header";
    uint32_t magic = read<uint32_t>();
    if (magic != kMagic) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "not a GGUF file: magic bytes %02x %02x %02x %02x, expected 'GGUF' (47 47 55 46)",
                    base_[0], base_[1], base_[2], base_[3]);
      fail(buf);
    }
    uint32_t version = read<uint32_t>();
    if ((version & 0xffff) == 0 && version != 0) {
      uint32_t swapped = __builtin_bswap32(version);
      fail("big-endian GGUF file (version " + std::to_string(swapped) +
           "); only little-endian GGUF files are supported");
    }
    if (version == 1) fail("unsupported GGUF version 1 (an early format with 32-bit counts); supported: 2, 3");
    if (version != 2 && version != 3) fail("unsupported GGUF version " + std::to_string(version) + "; supported: 2, 3");
    f_.version_ = version;

    uint64_t n_tensors = read<uint64_t>();
    uint64_t n_kv = read<uint64_t>();
    // Smallest possible entries: key (8) + type (4) + 1-byte value; name (8) + n_dims (4) + type (4) + offset (8).
    check_count(n_kv, 13, "metadata entries");
    check_count(n_tensors, 24, "tensor infos");

    read_metadata(n_kv);
    read_alignment();
    read_tensor_infos(n_tensors);
    place_tensors();
  }

 private:
  File& f_;
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string what_;  // what is being read, for messages: "tensor info 12 ('blk.0.attn_q.weight')"

  [[noreturn]] void fail(const std::string& msg) const { throw FormatError(f_.path_ + ": " + msg); }

  [[noreturn]] void truncated(uint64_t need) const {
    fail("truncated while reading " + what_ + ": need " + std::to_string(need) + " bytes at offset " +
         std::to_string(pos_) + ", file has " + std::to_string(size_));
  }

  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n) const {
    if (n > remaining()) truncated(n);
  }

  // A count of items of at least min_size bytes each must fit in what is left of the file.
  void check_count(uint64_t count, uint64_t min_size, const char* items) const {
    if (count <= remaining() / min_size) return;
    std::string need = count > std::numeric_limits<uint64_t>::max() / min_size
                           ? "more than 2^64"
                           : "at least " + std::to_string(count * min_size);
    fail("truncated or corrupt while reading " + what_ + ": " + std::to_string(count) + " " + items + " need " +
         need + " bytes at offset " + std::to_string(pos_) + ", file has " + std::to_string(size_));
  }

  template <class T>
  T read() {
    need(sizeof(T));
    T v = load<T>(base_ + pos_);
    pos_ += sizeof(T);
    return v;
  }

  std::string_view read_string() {
    uint64_t len = read<uint64_t>();
    need(len);
    std::string_view s(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return s;
  }

  ValueType read_type(const char* role) {
    uint64_t at = pos_;
    uint32_t t = read<uint32_t>();
    if (!valid_value_type(t))
      fail(what_ + ": unknown " + role + " value type " + std::to_string(t) + " at offset " + std::to_string(at));
    return static_cast<ValueType>(t);
  }

  Value read_value(ValueType t, int depth) {
    Value v;
    v.type = t;
    switch (t) {
      case ValueType::UINT8: v.u = read<uint8_t>(); break;
      case ValueType::UINT16: v.u = read<uint16_t>(); break;
      case ValueType::UINT32: v.u = read<uint32_t>(); break;
      case ValueType::UINT64: v.u = read<uint64_t>(); break;
      case ValueType::INT8: v.i = read<int8_t>(); break;
      case ValueType::INT16: v.i = read<int16_t>(); break;
      case ValueType::INT32: v.i = read<int32_t>(); break;
      case ValueType::INT64: v.i = read<int64_t>(); break;
      case ValueType::BOOL: v.i = read<uint8_t>() != 0; break;
      case ValueType::FLOAT32: v.f = read<float>(); break;
      case ValueType::FLOAT64: v.f = read<double>(); break;
      case ValueType::STRING: v.s = read_string(); break;
      case ValueType::ARRAY: read_array(v, depth); break;
    }
    return v;
  }

  void read_array(Value& v, int depth) {
    if (depth >= kMaxArrayDepth) fail(what_ + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    v.type = ValueType::ARRAY;
    v.elem_type = read_type("array item");
    v.n = read<uint64_t>();
    const uint64_t item_size = min_encoded_size(v.elem_type);
    std::string items = std::string(value_type_name(v.elem_type)) + " array items";
    check_count(v.n, item_size, items.c_str());
    if (v.elem_type == ValueType::STRING) {
      v.strings.reserve(v.n);
      for (uint64_t k = 0; k < v.n; ++k) v.strings.push_back(read_string());
    } else if (v.elem_type == ValueType::ARRAY) {
      v.items.reserve(v.n);
      for (uint64_t k = 0; k < v.n; ++k) {
        v.items.emplace_back();
        read_array(v.items.back(), depth + 1);
      }
    } else {
      v.raw = base_ + pos_;  // check_count above proved the n items are in the file
      pos_ += v.n * item_size;
    }
  }

  void read_metadata(uint64_t n_kv) {
    f_.kv_.reserve(n_kv);
    for (uint64_t k = 0; k < n_kv; ++k) {
      what_ = "metadata entry " + std::to_string(k);
      std::string key(read_string());
      what_ = "metadata entry " + std::to_string(k) + " (" + quote(key) + ")";
      ValueType t = read_type("metadata");
      Value v = read_value(t, 0);
      auto [it, inserted] = f_.kv_index_.emplace(key, f_.kv_.size());
      if (!inserted)
        fail("duplicate metadata key " + quote(key) + " (entries " + std::to_string(it->second) + " and " +
             std::to_string(k) + ")");
      f_.kv_.emplace_back(std::move(key), std::move(v));
    }
  }

  void read_alignment() {
    const Value* a = f_.find("general.alignment");
    if (!a) {
      f_.alignment_ = kDefaultAlignment;
      return;
    }
    if (!is_int_type(a->type))
      fail("general.alignment has type " + std::string(value_type_name(a->type)) + ", expected an integer (uint32)");
    if (is_signed_type(a->type) && a->i <= 0)
      fail("general.alignment is " + std::to_string(a->i) + ", must be a nonzero power of two");
    uint64_t al = is_signed_type(a->type) ? static_cast<uint64_t>(a->i) : a->u;
    if (al == 0 || (al & (al - 1)) != 0)
      fail("general.alignment is " + std::to_string(al) + ", must be a nonzero power of two");
    if (al > (uint64_t{1} << 30)) fail("general.alignment is " + std::to_string(al) + ", larger than 1 GiB");
    f_.alignment_ = al;
  }

  void read_tensor_infos(uint64_t n_tensors) {
    f_.tensors_.reserve(n_tensors);
    for (uint64_t k = 0; k < n_tensors; ++k) {
      what_ = "tensor info " + std::to_string(k);
      TensorInfo t;
      t.name = std::string(read_string());
      what_ += " (" + quote(t.name) + ")";
      const std::string where = "tensor " + quote(t.name);

      uint32_t n_dims = read<uint32_t>();
      if (n_dims > kMaxDims)
        fail(where + " has " + std::to_string(n_dims) + " dimensions, at most " + std::to_string(kMaxDims) +
             " are supported");
      t.n_dims = static_cast<int>(n_dims);
      int64_t n_elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        uint64_t ne = read<uint64_t>();
        if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail(where + ": dimension " + std::to_string(d) + " is " + std::to_string(ne) + ", must be > 0");
        if (static_cast<uint64_t>(n_elements) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne)
          fail(where + ": the element count of its shape overflows 64 bits");
        t.ne[d] = static_cast<int64_t>(ne);
        n_elements *= t.ne[d];
      }

      uint32_t type_id = read<uint32_t>();
      const TypeTraits* tr = type_traits(type_id);
      if (!tr) {
        if (const char* known = other_ggml_type_name(type_id))
          fail(where + " has ggml type id " + std::to_string(type_id) + " (" + known +
               "), which this engine does not support");
        fail(where + " has unknown ggml type id " + std::to_string(type_id));
      }
      t.type = static_cast<DType>(type_id);
      if (t.ne[0] % tr->block_size != 0)
        fail(where + " (" + tr->name + "): ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the block size " +
             std::to_string(tr->block_size));
      const uint64_t row_blocks = static_cast<uint64_t>(t.ne[0] / tr->block_size);
      if (row_blocks > std::numeric_limits<uint64_t>::max() / tr->type_size)
        fail(where + ": its byte size overflows 64 bits");  // else a 2^62-element f32 row wraps to 0 bytes
      uint64_t row_bytes = row_blocks * tr->type_size;
      uint64_t rows = static_cast<uint64_t>(t.rows());
      if (rows != 0 && row_bytes > std::numeric_limits<uint64_t>::max() / rows)
        fail(where + ": its byte size overflows 64 bits");
      uint64_t nbytes = row_bytes * rows;
      if (nbytes > size_) fail("truncated or corrupt: " + where + " " + t.shape_str() + " " + tr->name + " needs " + std::to_string(nbytes) +
                               " bytes, the whole file has " + std::to_string(size_));
      t.nbytes = static_cast<size_t>(nbytes);
      t.offset = read<uint64_t>();

      auto [it, inserted] = f_.tensor_index_.emplace(t.name, f_.tensors_.size());
      if (!inserted)
        fail("duplicate tensor name " + quote(t.name) + " (tensor infos " + std::to_string(it->second) + " and " +
             std::to_string(k) + ")");
      f_.tensors_.push_back(std::move(t));
    }
  }

  // The data section starts at the next multiple of the alignment; each tensor must start at an
  // aligned offset inside it, end inside the file, and not overlap another tensor.
  void place_tensors() {
    const uint64_t al = f_.alignment_;
    const uint64_t data = (pos_ + al - 1) / al * al;  // pos_ <= size_ < 2^63 and al <= 2^30: no overflow
    f_.data_offset_ = data;
    if (f_.tensors_.empty()) return;
    if (data > size_)
      fail("truncated: the data section starts at offset " + std::to_string(data) + " (alignment " +
           std::to_string(al) + "), file has " + std::to_string(size_));
    const uint64_t data_size = size_ - data;
    for (TensorInfo& t : f_.tensors_) {
      const std::string where = "tensor " + quote(t.name) + " (" + type_name(t.type) + " " + t.shape_str() + ", " +
                                std::to_string(t.nbytes) + " bytes)";
      if (t.offset % al != 0)
        fail(where + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(al));
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
      {
        // data + offset + nbytes may not fit in 64 bits for a corrupt offset
        std::string end = t.offset > std::numeric_limits<uint64_t>::max() - data - t.nbytes
                              ? "beyond 2^64"
                              : "up to " + std::to_string(data + t.offset + t.nbytes);
        fail("truncated: " + where + " at data offset " + std::to_string(t.offset) + " needs bytes " + end +
             " (data section starts at " + std::to_string(data) + "), file has " + std::to_string(size_));
      }
      t.data = base_ + data + t.offset;
    }
    std::vector<const TensorInfo*> order;
    order.reserve(f_.tensors_.size());
    for (const TensorInfo& t : f_.tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < order.size(); ++k) {
      const TensorInfo& a = *order[k - 1];
      const TensorInfo& b = *order[k];
      if (a.offset + a.nbytes > b.offset)
        fail("tensors " + quote(a.name) + " (data offset " + std::to_string(a.offset) + ", " + std::to_string(a.nbytes) +
             " bytes) and " + quote(b.name) + " (data offset " + std::to_string(b.offset) + ") overlap");
    }
  }
};

// ---- File ----

std::shared_ptr<File> File::open(const std::string& path) {
  std::shared_ptr<File> f(new File());
  f->path_ = path;
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is rejected below as not a file).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    throw FileError(path + ": cannot open: " + std::strerror(e), e == ENOENT);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw FileError(path + ": cannot stat: " + std::strerror(e), false);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FileError(path + ": not a regular file", false);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > static_cast<uint64_t>(std::numeric_limits<size_t>::max()) ||
      size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    ::close(fd);
    throw FileError(path + ": too large to map (" + std::to_string(size) + " bytes)", false);
  }
  if (size > 0) {
    // Read-only and private: the mapping shares the page cache, costs no RAM of its own, and
    // tensor data can be used in place. The fd can be closed: the mapping keeps the file.
    void* p = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw FileError(path + ": cannot mmap " + std::to_string(size) + " bytes: " + std::strerror(e), false);
    }
    f->base_ = static_cast<const uint8_t*>(p);
    f->size_ = static_cast<size_t>(size);
  }
  ::close(fd);
  Parser(*f).parse();
  return f;
}

File::~File() {
  if (base_) munmap(const_cast<uint8_t*>(base_), size_);
}

namespace {
// madvise wants a page-aligned start; widen [p, p + n) to whole pages inside the mapping.
void advise(const uint8_t* base, size_t size, const uint8_t* p, size_t n, int advice) {
  if (!base || n == 0) return;
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t begin = static_cast<size_t>(p - base) / page * page;
  size_t end = std::min(size, static_cast<size_t>(p - base) + n);
  madvise(const_cast<uint8_t*>(base) + begin, end - begin, advice);
}
}  // namespace

void File::advise_willneed(const TensorInfo& t) const { advise(base_, size_, t.data, t.nbytes, MADV_WILLNEED); }

void File::advise_dontneed(const TensorInfo& t) const {
  // Only whole pages that belong to this tensor alone: a neighbour may still be in use.
  if (!base_ || t.nbytes == 0) return;
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t off = static_cast<size_t>(t.data - base_);
  size_t begin = (off + page - 1) / page * page;
  size_t end = (off + t.nbytes) / page * page;
  if (end > begin) madvise(const_cast<uint8_t*>(base_) + begin, end - begin, MADV_DONTNEED);
}

void File::advise_willneed_all() const {
  if (base_ && data_offset_ < size_) advise(base_, size_, base_ + data_offset_, size_ - data_offset_, MADV_WILLNEED);
}

// ---- metadata getters ----

const Value* File::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {
std::string describe_type(const Value& v) {
  if (v.type == ValueType::ARRAY) return std::string("array of ") + value_type_name(v.elem_type);
  return value_type_name(v.type);
}
}  // namespace

#define MCV_KEY_ERROR(key, v, expected) \
  FormatError(path_ + ": metadata key '" + key + "' has type " + describe_type(v) + ", expected " + expected)

static const Value& require(const File& f, const std::string& key) {
  const Value* v = f.find(key);
  if (!v) throw FormatError(f.path() + ": metadata key '" + key + "' not found");
  return *v;
}

std::string File::get_string(const std::string& key) const {
  const Value& v = require(*this, key);
  if (v.type != ValueType::STRING) throw MCV_KEY_ERROR(key, v, "string");
  return std::string(v.s);
}

int64_t File::get_int(const std::string& key) const {
  const Value& v = require(*this, key);
  if (!is_int_type(v.type)) throw MCV_KEY_ERROR(key, v, "an integer");
  if (is_signed_type(v.type)) return v.i;
  if (v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw FormatError(path_ + ": metadata key '" + key + "' = " + std::to_string(v.u) + " does not fit in int64");
  return static_cast<int64_t>(v.u);
}

double File::get_float(const std::string& key) const {
  const Value& v = require(*this, key);
  if (is_float_type(v.type)) return v.f;
  if (is_int_type(v.type)) return is_signed_type(v.type) ? static_cast<double>(v.i) : static_cast<double>(v.u);
  throw MCV_KEY_ERROR(key, v, "a number");
}

bool File::get_bool(const std::string& key) const {
  const Value& v = require(*this, key);
  if (v.type != ValueType::BOOL) throw MCV_KEY_ERROR(key, v, "bool");
  return v.i != 0;
}

std::vector<std::string_view> File::get_string_array(const std::string& key) const {
  const Value& v = require(*this, key);
  if (v.type != ValueType::ARRAY || v.elem_type != ValueType::STRING) throw MCV_KEY_ERROR(key, v, "array of string");
  return v.strings;
}

std::vector<int64_t> File::get_int_array(const std::string& key) const {
  const Value& v = require(*this, key);
  if (v.type != ValueType::ARRAY || !(is_int_type(v.elem_type) || v.elem_type == ValueType::BOOL))
    throw MCV_KEY_ERROR(key, v, "array of integers");
  std::vector<int64_t> out(v.n);
  try {
    for (uint64_t k = 0; k < v.n; ++k) out[k] = v.elem_int(k);
  } catch (const InvalidArgument& e) {
    throw FormatError(path_ + ": metadata key '" + key + "': " + e.what());
  }
  return out;
}

std::vector<double> File::get_float_array(const std::string& key) const {
  const Value& v = require(*this, key);
  if (v.type != ValueType::ARRAY || !(is_int_type(v.elem_type) || is_float_type(v.elem_type)))
    throw MCV_KEY_ERROR(key, v, "array of numbers");
  std::vector<double> out(v.n);
  for (uint64_t k = 0; k < v.n; ++k) out[k] = v.elem_float(k);
  return out;
}

std::string File::get_string(const std::string& key, const std::string& def) const {
  return has(key) ? get_string(key) : def;
}
int64_t File::get_int(const std::string& key, int64_t def) const { return has(key) ? get_int(key) : def; }
double File::get_float(const std::string& key, double def) const { return has(key) ? get_float(key) : def; }
bool File::get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }

#undef MCV_KEY_ERROR

// ---- tensors ----

const TensorInfo* File::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(const std::string& name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) throw FormatError(path_ + ": tensor '" + name + "' not found");
  return *t;
}

const TensorInfo& File::tensor(const std::string& name, std::initializer_list<int64_t> ne) const {
  const TensorInfo& t = tensor(name);
  bool ok = ne.size() <= kMaxDims;
  size_t d = 0;
  for (int64_t x : ne) {
    if (d < kMaxDims && t.ne[d] != x) ok = false;
    ++d;
  }
  for (; ok && d < kMaxDims; ++d)
    if (t.ne[d] != 1) ok = false;
  if (!ok) {
    std::string want = "[";
    size_t k = 0;
    for (int64_t x : ne) want += (k++ ? ", " : "") + std::to_string(x);
    throw FormatError(path_ + ": tensor '" + name + "' has shape " + t.shape_str() + ", expected " + want + "]");
  }
  return t;
}

}  // namespace minicpmv::gguf
