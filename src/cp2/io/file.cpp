#include "cp2/io/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cp2/common.h"

namespace cp2::io {

File File::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open file (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  return File(fd, static_cast<uint64_t>(st.st_size), path);
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

void File::read_at(void* dst, uint64_t offset, uint64_t n) const {
  auto* p = static_cast<char*>(dst);
  for (uint64_t done = 0; done < n;) {
    const ssize_t got = ::pread(fd_, p + done, static_cast<size_t>(std::min<uint64_t>(n - done, uint64_t{1} << 30)),
                                static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      throw Error(path_ + ": read error at byte " + std::to_string(offset + done) + " (" + std::strerror(errno) + ")");
    if (got == 0)
      throw Error(path_ + ": file ends at byte " + std::to_string(offset + done) + ", expected at least " +
                  std::to_string(offset + n) + " bytes (truncated, or cut while being read)");
    done += static_cast<uint64_t>(got);
  }
}

std::string File::read_at(uint64_t offset, uint64_t n) const {
  std::string out(n, '\0');
  read_at(out.data(), offset, n);
  return out;
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace cp2::io
