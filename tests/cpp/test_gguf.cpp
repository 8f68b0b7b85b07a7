// GGUF reader checks that run natively and under qemu-aarch64. The file is written byte by byte
// here from the format description (not by our code), so a layout error in the reader shows up.
#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "minicpmv/error.h"
#include "testing.h"

using namespace minicpmv;

namespace {

struct Bytes {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof v);
    b.insert(b.end(), tmp, tmp + sizeof v);
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void pad(size_t align) {
    while (b.size() % align) b.push_back(0);
  }
};

// A small v3 file: 6 metadata entries (incl. a string array, a float array and an array of arrays),
// alignment 64, an f32 [3, 2] tensor and a q8_0 [64] tensor.
std::vector<uint8_t> sample_file(uint32_t version = 3) {
  Bytes f;
  f.put<uint32_t>(0x46554747);
  f.put<uint32_t>(version);
  f.put<uint64_t>(2);  // tensors
  f.put<uint64_t>(6);  // kv
  f.str("general.architecture"); f.put<uint32_t>(8); f.str("qwen2");
  f.str("general.alignment"); f.put<uint32_t>(4); f.put<uint32_t>(64);
  f.str("qwen2.rope.freq_base"); f.put<uint32_t>(6); f.put<float>(1e6f);
  f.str("tok.tokens"); f.put<uint32_t>(9); f.put<uint32_t>(8); f.put<uint64_t>(3);
  f.str("a"); f.str(""); f.str("\xe4\xbd\xa0");
  f.str("img.mean"); f.put<uint32_t>(9); f.put<uint32_t>(6); f.put<uint64_t>(3);
  f.put<float>(0.5f); f.put<float>(0.25f); f.put<float>(-1.0f);
  f.str("nested"); f.put<uint32_t>(9); f.put<uint32_t>(9); f.put<uint64_t>(2);
  f.put<uint32_t>(5); f.put<uint64_t>(2); f.put<int32_t>(-7); f.put<int32_t>(9);
  f.put<uint32_t>(8); f.put<uint64_t>(1); f.str("x");
  // tensor infos
  f.str("t.f32"); f.put<uint32_t>(2); f.put<uint64_t>(3); f.put<uint64_t>(2); f.put<uint32_t>(0); f.put<uint64_t>(0);
  f.str("t.q8"); f.put<uint32_t>(1); f.put<uint64_t>(64); f.put<uint32_t>(8); f.put<uint64_t>(64);
  f.pad(64);
  for (int k = 0; k < 6; ++k) f.put<float>(static_cast<float>(k) + 0.5f);
  f.pad(64);
  for (int k = 0; k < 68; ++k) f.b.push_back(static_cast<uint8_t>(k));  // 2 q8_0 blocks of 34 bytes
  return f.b;
}

std::string write_tmp(const std::vector<uint8_t>& bytes, size_t len, const char* tag) {
  std::string path = "/tmp/mcv_test_gguf_" + std::to_string(::getpid()) + "_" + tag + ".gguf";
  FILE* fp = std::fopen(path.c_str(), "wb");
  if (len) std::fwrite(bytes.data(), 1, len, fp);
  std::fclose(fp);
  return path;
}

}  // namespace

TEST(reads_hand_written_file) {
  for (uint32_t version : {2u, 3u}) {
    auto bytes = sample_file(version);
    std::string path = write_tmp(bytes, bytes.size(), "ok");
    auto f = gguf::File::open(path);
    CHECK(f->version() == version);
    CHECK(f->alignment() == 64);
    CHECK(f->data_offset() % 64 == 0);
    CHECK(f->file_size() == bytes.size());
    CHECK(f->architecture() == "qwen2");
    CHECK(f->get_int("general.alignment") == 64);
    CHECK(f->get_float("qwen2.rope.freq_base") == 1e6);
    auto toks = f->get_string_array("tok.tokens");
    CHECK(toks.size() == 3 && toks[0] == "a" && toks[1].empty() && toks[2] == "\xe4\xbd\xa0");
    auto mean = f->get_float_array("img.mean");
    CHECK(mean.size() == 3 && mean[0] == 0.5 && mean[1] == 0.25 && mean[2] == -1.0);
    const gguf::Value* nested = f->find("nested");
    CHECK(nested && nested->n == 2 && nested->items.size() == 2);
    if (nested && nested->items.size() == 2) {
      CHECK(nested->items[0].elem_type == gguf::ValueType::INT32 && nested->items[0].elem_int(1) == 9);
      CHECK(nested->items[0].elem_int(0) == -7);
      CHECK(nested->items[1].strings.size() == 1 && nested->items[1].strings[0] == "x");
    }
    CHECK(f->get_int("missing", 42) == 42);
    CHECK_THROWS(f->get_int("general.architecture"));
    CHECK_THROWS(f->get_string("missing"));

    CHECK(f->tensors().size() == 2);
    const gguf::TensorInfo& a = f->tensor("t.f32", {3, 2});
    CHECK(a.type == DType::F32 && a.n_dims == 2 && a.nbytes == 24 && a.offset == 0);
    CHECK(a.shape_str() == "[3, 2]");
    float x5;
    std::memcpy(&x5, a.data + 20, 4);
    CHECK(x5 == 5.5f);
    const gguf::TensorInfo& q = f->tensor("t.q8");
    CHECK(q.type == DType::Q8_0 && q.nbytes == 68 && q.offset == 64 && q.data[67] == 67);
    CHECK(q.data == reinterpret_cast<const uint8_t*>(a.data) + 64);
    CHECK_THROWS(f->tensor("t.f32", {2, 3}));
    CHECK_THROWS(f->tensor("nope"));
    f->advise_willneed(q);
    f->advise_dontneed(q);
    CHECK(q.data[66] == 66);  // pages come back after dontneed
    std::remove(path.c_str());
  }
}

TEST(every_truncation_throws_format_error) {
  auto bytes = sample_file();
  int format_errors = 0;
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::string path = write_tmp(bytes, len, "trunc");
    bool ok = false;
    try {
      gguf::File::open(path);
    } catch (const FormatError& e) {
      ok = std::string(e.what()).find(path) != std::string::npos;
    } catch (const std::exception& e) {
      std::printf("  len %zu: wrong exception type: %s\n", len, e.what());
    }
    CHECK_MSG(ok, "truncated at %zu of %zu bytes", len, bytes.size());
    format_errors += ok;
    std::remove(path.c_str());
  }
  CHECK(format_errors == static_cast<int>(bytes.size()));
}

TEST(corrupt_fields_throw_format_error) {
  auto good = sample_file();
  auto expect_format_error = [&](std::vector<uint8_t> b, const char* what, const char* needle) {
    std::string path = write_tmp(b, b.size(), "bad");
    std::string msg;
    try {
      gguf::File::open(path);
    } catch (const FormatError& e) {
      msg = e.what();
    }
    CHECK_MSG(msg.find(needle) != std::string::npos, "%s: message '%s' lacks '%s'", what, msg.c_str(), needle);
    std::remove(path.c_str());
  };
  auto patch64 = [](std::vector<uint8_t> b, size_t at, uint64_t v) { std::memcpy(&b[at], &v, 8); return b; };
  auto patch32 = [](std::vector<uint8_t> b, size_t at, uint32_t v) { std::memcpy(&b[at], &v, 4); return b; };
  expect_format_error(patch32(good, 0, 0x12345678), "magic", "not a GGUF file");
  expect_format_error(patch32(good, 4, 1), "v1", "unsupported GGUF version 1");
  expect_format_error(patch32(good, 4, 0x03000000), "big-endian", "big-endian");
  expect_format_error(patch64(good, 8, uint64_t{1} << 62), "tensor count", "tensor infos need more than 2^64");
  expect_format_error(patch64(good, 16, ~uint64_t{0}), "kv count", "metadata entries need more than 2^64");
  expect_format_error(patch64(good, 8, 100), "tensor count 100", "100 tensor infos need at least 2400 bytes");
  expect_format_error(patch64(good, 24, uint64_t{1} << 40), "key length", "need 1099511627776 bytes");
  expect_format_error(patch32(good, 8 + 16 + 8 + 20, 13), "value type", "unknown metadata value type 13");
}

// Random byte changes in the header: the file either still reads or throws FormatError, and every
// tensor that reads lies inside the file (run under ASan/qemu this also checks memory safety).
TEST(random_byte_flips_read_or_throw_format_error) {
  auto good = sample_file();
  const size_t header = good.size() - 64 - 68 - 40;  // flips land in header and tensor infos
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  auto next = [&] { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; };
  int ok = 0, errors = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    auto b = good;
    int flips = 1 + static_cast<int>(next() % 3);
    for (int k = 0; k < flips; ++k) b[next() % header] = static_cast<uint8_t>(next());
    std::string path = write_tmp(b, b.size(), "flip");
    try {
      auto f = gguf::File::open(path);
      for (const auto& t : f->tensors()) {
        const uint8_t* begin = t.data;
        CHECK(t.offset + t.nbytes + f->data_offset() <= f->file_size());
        volatile uint8_t sink = begin[0] ^ begin[t.nbytes - 1];  // touch first and last byte
        (void)sink;
      }
      ++ok;
    } catch (const FormatError&) {
      ++errors;
    } catch (const std::exception& e) {
      CHECK_MSG(false, "iteration %d: unexpected exception: %s", iter, e.what());
    }
    std::remove(path.c_str());
  }
  CHECK(errors > 500);
  std::printf("  %d read, %d FormatError\n", ok, errors);
}

TEST(missing_file_is_file_error_not_found) {
  bool not_found = false;
  try {
    gguf::File::open("/nonexistent/dir/x.gguf");
  } catch (const FileError& e) {
    not_found = e.not_found;
  }
  CHECK(not_found);
}

TEST_MAIN()
