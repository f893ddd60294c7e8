// Class-folder datasets in Keras's image_dataset_from_directory order.
#include "bnorm/io/image_folder.hpp"

#include <algorithm>
#include <cctype>
#include <system_error>

#include "bnorm/core/error.hpp"
#include "bnorm/io/error.hpp"
#include "bnorm/io/image.hpp"

namespace bnorm::io {

namespace fs = std::filesystem;

namespace {

bool has_image_extension(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* ext : {".bmp", ".gif", ".jpeg", ".jpg", ".png"}) {
    const std::string e = ext;
    if (lower.size() >= e.size() && lower.compare(lower.size() - e.size(), e.size(), e) == 0) return true;
  }
  return false;
}

bool is_folder(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);  // follows symbolic links, as os.path.isdir
}

// The subfolder names of `dir` (not hidden), sorted: Keras's class names.
std::vector<std::string> class_folders(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] != '.' && is_folder(it->path())) names.push_back(name);
  }
  if (ec)
    throw FileError(dir.string(), "folder", "a readable folder", "an error listing it: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

// os.walk(top) without following links, sorted by folder path, then files by name.
std::vector<std::string> walk_files(const fs::path& top) {
  std::vector<std::pair<std::string, std::vector<std::string>>> folders;  // path, its file names
  std::vector<fs::path> pending{top};
  while (!pending.empty()) {
    const fs::path folder = pending.back();
    pending.pop_back();
    std::vector<std::string> files;
    std::error_code ec;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      // os.walk: a link to a folder is a folder (listed, not entered), anything else a file.
      if (it->is_directory(type_ec)) {
        if (!it->is_symlink(type_ec)) pending.push_back(it->path());
      } else {
        files.push_back(it->path().filename().string());
      }
    }
    if (ec)
      throw FileError(folder.string(), "folder", "a readable folder", "an error listing it: " + ec.message());
    std::sort(files.begin(), files.end());
    folders.emplace_back(folder.string(), std::move(files));
  }
  std::sort(folders.begin(), folders.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (const auto& [folder, files] : folders)
    for (const auto& name : files)
      if (has_image_extension(name)) out.push_back((fs::path(folder) / name).string());
  return out;
}

}  // namespace

ImageFolderIndex index_image_folder(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec))
    throw FileError(dir.string(), "dataset folder", "an existing folder", "no such file or folder");
  if (!is_folder(dir))
    throw FileError(dir.string(), "dataset folder", "a folder of class subfolders", "a file");
  ImageFolderIndex index;
  index.class_names = class_folders(dir);
  if (index.class_names.empty()) {
    throw FormatError(dir.string(), "dataset folder",
                      "one subfolder per class (DIR/<class>/<image>.png|jpg|jpeg|bmp|gif)", "no subfolders");
  }
  for (std::size_t c = 0; c < index.class_names.size(); ++c) {
    for (auto& file : walk_files(dir / index.class_names[c])) {
      index.files.push_back(std::move(file));
      index.labels.push_back(static_cast<std::int64_t>(c));
    }
  }
  if (index.files.empty()) {
    std::string classes;
    for (const auto& n : index.class_names) classes += (classes.empty() ? "" : ", ") + n;
    throw FormatError(
        dir.string(), "dataset folder", "image files (.png .jpg .jpeg .bmp .gif) in its class folders",
        "none in " + std::to_string(index.class_names.size()) + " class folders (" + classes + ")");
  }
  return index;
}

ImageFolderDataset load_image_folder(const fs::path& dir, std::int64_t height, std::int64_t width) {
  if (height < 1 || width < 1) {
    throw ArgumentError("load_image_folder", "image size", "at least 1 x 1",
                        std::to_string(height) + " x " + std::to_string(width));
  }
  ImageFolderIndex index = index_image_folder(dir);
  const auto n = static_cast<std::int64_t>(index.files.size());
  ImageFolderDataset ds;
  ds.x = Tensor(Shape{n, height, width, 3});
  ds.y = Tensor(Shape{n});
  const std::int64_t per_image = height * width * 3;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::string& file = index.files[static_cast<std::size_t>(i)];
    // read_image names the file in its errors (FileError, FormatError).
    const Tensor image = resize_bilinear(read_image(file), height, width);
    std::copy_n(image.data(), per_image, ds.x.data() + i * per_image);
    ds.y[i] = static_cast<float>(index.labels[static_cast<std::size_t>(i)]);
  }
  ds.class_names = std::move(index.class_names);
  ds.files = std::move(index.files);
  return ds;
}

bool looks_like_image_folder(const fs::path& dir) {
  if (!is_folder(dir)) return false;
  std::error_code ec;
  for (const char* idx : {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte",
                          "t10k-images-idx3-ubyte.gz"})
    if (fs::exists(dir / idx, ec)) return false;
  try {
    return !class_folders(dir).empty();
  } catch (const FileError&) {
    return false;
  }
}

}  // namespace bnorm::io
