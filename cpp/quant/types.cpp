#include "quant/types.h"

#include <cctype>
#include <cstdio>

#include "minicpmv/error.h"

namespace minicpmv {
namespace {

struct Entry {
  uint32_t id;
  TypeTraits traits;
};

// Block sizes and byte sizes follow ggml (see quant/blocks.h for the layouts).
constexpr Entry kTypes[] = {
    {0, {"f32", 1, 4, true}},        {1, {"f16", 1, 2, true}},
    {2, {"q4_0", 32, 18, true}},     {3, {"q4_1", 32, 20, true}},
    {6, {"q5_0", 32, 22, true}},     {7, {"q5_1", 32, 24, true}},
    {8, {"q8_0", 32, 34, true}},     {9, {"q8_1", 32, 36, false}},
    {10, {"q2_K", 256, 84, false}},  {11, {"q3_K", 256, 110, false}},
    {12, {"q4_K", 256, 144, true}},  {13, {"q5_K", 256, 176, true}},
    {14, {"q6_K", 256, 210, true}},  {15, {"q8_K", 256, 292, false}},
    {24, {"i8", 1, 1, false}},       {25, {"i16", 1, 2, false}},
    {26, {"i32", 1, 4, false}},      {27, {"i64", 1, 8, false}},
    {28, {"f64", 1, 8, false}},      {30, {"bf16", 1, 2, true}},
};

}  // namespace

const TypeTraits* type_traits(uint32_t type_id) {
  for (const Entry& e : kTypes)
    if (e.id == type_id) return &e.traits;
  return nullptr;
}

const TypeTraits& type_traits(DType t) {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  if (!tr) throw InvalidArgument("unknown tensor type id " + std::to_string(static_cast<uint32_t>(t)));
  return *tr;
}

const char* type_name(DType t) { return type_traits(t).name; }

DType dtype_from_name(const std::string& name) {
  auto lower = [](std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string want = lower(name);
  std::string known;
  for (const Entry& e : kTypes) {
    if (lower(e.traits.name) == want) return static_cast<DType>(e.id);
    known += known.empty() ? "" : ", ";
    known += e.traits.name;
  }
  throw InvalidArgument("unknown tensor type '" + name + "' (known: " + known + ")");
}

}  // namespace minicpmv
