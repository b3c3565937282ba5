// Files written whole or not at all: a temp file beside the target, written, flushed,
// fsynced and renamed into place, so a full disk or a kill never leaves a truncated or
// 0-byte config.yaml, summary.json, metrics JSON or image behind.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cp2::io {

// Writes `data` to `path` atomically; throws cp2::Error naming the path and the OS error
// (e.g. "No space left on device"); the temp file is removed on failure.
void write_file_atomic(const std::string& path, const std::string& data);

// A temp name beside `path` that no other process uses (path.<pid>.tmp).
std::string temp_path(const std::string& path);
// The pid in a name temp_path() made (NAME.<pid>.tmp), or 0 for any other name.
long temp_path_pid(const std::string& filename);

// Removes the temp files in `dir` (not below it) of writes that were killed half way: names
// temp_path() made whose pid is no live process, or this process's own (call it before this
// process writes there). Another live process's files are left alone. Returns what it removed.
struct RemovedTemps {
  std::vector<std::string> paths;  // sorted
  uint64_t bytes = 0;
};
RemovedTemps remove_killed_writes(const std::string& dir);
// The line that tells the user so: "DIR: removed N unfinished file(s) (SIZE) of a write that
// was killed: FIRST, ..." (SIZE in bytes, KiB or MiB); "" when nothing was removed.
std::string describe(const RemovedTemps& removed, const std::string& dir);

// Renames the written `tmp` onto `path`; on failure removes `tmp` and throws naming `path`
// (a folder standing at `path` is said as such, not as rename's "Is a directory").
void rename_into_place(const std::string& tmp, const std::string& path);

}  // namespace cp2::io
