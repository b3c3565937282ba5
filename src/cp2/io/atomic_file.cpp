#include "cp2/io/atomic_file.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cp2/common.h"

namespace cp2::io {

std::string temp_path(const std::string& path) { return path + "." + std::to_string(getpid()) + ".tmp"; }

long temp_path_pid(const std::string& filename) {
  const std::string ext = ".tmp";
  if (filename.size() <= ext.size() || filename.compare(filename.size() - ext.size(), ext.size(), ext) != 0) return 0;
  const std::string stem = filename.substr(0, filename.size() - ext.size());
  const auto dot = stem.rfind('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == stem.size() || stem.size() - dot > 11) return 0;
  long pid = 0;
  for (size_t i = dot + 1; i < stem.size(); ++i) {
    if (stem[i] < '0' || stem[i] > '9') return 0;
    pid = pid * 10 + (stem[i] - '0');
  }
  return pid;
}

RemovedTemps remove_killed_writes(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> stale;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const long pid = temp_path_pid(e.path().filename().string());
    if (pid && e.is_regular_file(ec) && (pid == getpid() || ::kill(static_cast<pid_t>(pid), 0) != 0))
      stale.push_back(e.path());
  }
  std::sort(stale.begin(), stale.end());
  RemovedTemps out;
  for (const auto& p : stale) {
    std::error_code size_ec;
    const auto bytes = fs::file_size(p, size_ec);
    if (!fs::remove(p, ec)) continue;
    out.paths.push_back(p.string());
    if (!size_ec) out.bytes += bytes;
  }
  return out;
}

std::string describe(const RemovedTemps& removed, const std::string& dir) {
  const auto& p = removed.paths;
  if (p.empty()) return "";
  char size[32];  // a half-written checkpoint is MiB, a half-written PNG may be bytes
  if (removed.bytes < 1024)
    std::snprintf(size, sizeof size, "%llu bytes", static_cast<unsigned long long>(removed.bytes));
  else if (removed.bytes < 1048576)
    std::snprintf(size, sizeof size, "%.1f KiB", removed.bytes / 1024.0);
  else
    std::snprintf(size, sizeof size, "%.1f MiB", removed.bytes / 1048576.0);
  return dir + ": removed " + count_of(p.size(), "unfinished file") + " (" +
         size + ") of a write that was killed: " + p[0] + (p.size() > 1 ? ", ..." : "");
}

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = temp_path(path);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write (" + std::strerror(errno) + ")");
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size() && std::fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write (" + std::strerror(ok ? errno : err) + ")");
  }
  rename_into_place(tmp, path);
}

void rename_into_place(const std::string& tmp, const std::string& path) {
  if (std::rename(tmp.c_str(), path.c_str()) == 0) return;
  const int e = errno;
  std::remove(tmp.c_str());
  if (e == EISDIR || e == ENOTEMPTY || e == EEXIST)
    throw Error(path + ": is a folder; expected the name of a file to write");
  throw Error(path + ": cannot rename temp file into place (" + std::strerror(e) + ")");
}

}  // namespace cp2::io
