// Typed errors thrown at the engine's API boundary. The bindings map them to Python exceptions:
// FileError -> FileNotFoundError / OSError, FormatError and InvalidArgument -> ValueError,
// ContextOverflow -> a ValueError subclass the Python API exposes as ContextLimitError.
#pragma once
#include <stdexcept>
#include <string>

namespace minicpmv {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The file could not be opened, mapped or read (missing, permissions, I/O).
struct FileError : Error {
  using Error::Error;
  bool not_found = false;
  FileError(const std::string& msg, bool missing) : Error(msg), not_found(missing) {}
};

// The file's content is wrong: truncated, corrupt, wrong architecture, unsupported type, bad shape.
struct FormatError : Error {
  using Error::Error;
};

// A caller passed something unusable (wrong shape, bad option, unreadable image data).
struct InvalidArgument : Error {
  using Error::Error;
};

// The prompt (or prompt + generated tokens) does not fit in the context given at load time.
struct ContextOverflow : Error {
  using Error::Error;
};

}  // namespace minicpmv
