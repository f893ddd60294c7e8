#include "hdf5.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "bnorm/io/error.hpp"

namespace bnorm::io::h5 {

namespace {

// HDF5 prints its error stack to stderr by default; bnorm reports through exceptions.
void quiet() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

constexpr std::int64_t kMaxBytes = std::int64_t{1} << 32;  // 4 GiB per dataset
constexpr int kMaxRank = 8;

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    const std::size_t end = slash == std::string::npos ? path.size() : slash;
    if (end > start) parts.push_back(path.substr(start, end - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return parts;
}

}  // namespace

void Handle::reset() noexcept {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = -1;
}

bool has_signature(std::string_view bytes) {
  static constexpr char kSig[] = "\x89HDF\r\n\x1a\n";
  return bytes.size() >= 8 && std::memcmp(bytes.data(), kSig, 8) == 0;
}

// ---------------------------------------------------------------------------------------
// Reader

void Reader::fail(const std::string& where, const std::string& expected, const std::string& received) const {
  throw FormatError(name_, where, expected, received);
}

Reader Reader::open_image(std::string_view bytes, const std::string& name) {
  quiet();
  if (!has_signature(bytes)) {
    throw FormatError(name, "file", "an HDF5 file (signature \\x89HDF)",
                      bytes.empty() ? std::string("an empty file") : std::string("other contents"));
  }
  // HDF5's core (in-memory) driver opens a copy of the bytes, set as the file image.
  // (The high-level H5LTopen_file_image leaks its bookkeeping when it does not copy.)
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS));
  if (!fapl.valid() || H5Pset_fapl_core(fapl.get(), std::size_t{1} << 20, 0) < 0 ||
      H5Pset_file_image(fapl.get(), const_cast<char*>(bytes.data()), bytes.size()) < 0) {
    throw FormatError(name, "file", "an HDF5 file HDF5 can hold in memory", "one it cannot");
  }
  const hid_t id = H5Fopen("bnorm-file-image.h5", H5F_ACC_RDONLY, fapl.get());
  if (id < 0) throw FormatError(name, "file", "a readable HDF5 file", "one HDF5 cannot open (truncated or corrupt)");
  return Reader(Handle(id), name);
}

void Reader::require_hard_links(const std::string& path) const {
  std::string at;
  for (const std::string& part : split_path(path)) {
    at += "/" + part;
    const htri_t exists = H5Lexists(file_.get(), at.c_str(), H5P_DEFAULT);
    if (exists <= 0) fail(path, "an existing object", "no '" + at + "'");
    H5L_info_t info;
    if (H5Lget_info(file_.get(), at.c_str(), &info, H5P_DEFAULT) < 0) fail(at, "a readable link", "an unreadable one");
    if (info.type != H5L_TYPE_HARD) fail(at, "a plain (hard) link", "a soft or external link");
  }
}

namespace {
bool link_chain_exists(hid_t file, const std::string& path) {
  std::string at;
  for (const std::string& part : split_path(path)) {
    at += "/" + part;
    if (H5Lexists(file, at.c_str(), H5P_DEFAULT) <= 0) return false;
    H5L_info_t info;
    if (H5Lget_info(file, at.c_str(), &info, H5P_DEFAULT) < 0 || info.type != H5L_TYPE_HARD) return false;
  }
  return true;
}

bool object_is(hid_t file, const std::string& path, H5O_type_t type) {
  if (path == "/" || path.empty()) return type == H5O_TYPE_GROUP;
  if (!link_chain_exists(file, path)) return false;
  H5O_info_t info;
  if (H5Oget_info_by_name2(file, path.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return false;
  return info.type == type;
}
}  // namespace

bool Reader::has_group(const std::string& path) const { return object_is(file_.get(), path, H5O_TYPE_GROUP); }
bool Reader::has_dataset(const std::string& path) const { return object_is(file_.get(), path, H5O_TYPE_DATASET); }

std::vector<std::string> Reader::children(const std::string& group) const {
  if (!has_group(group)) fail(group, "a group", "no group there");
  Handle g(H5Gopen2(file_.get(), group.empty() ? "/" : group.c_str(), H5P_DEFAULT));
  if (!g.valid()) fail(group, "a readable group", "one HDF5 cannot open");
  H5G_info_t info;
  if (H5Gget_info(g.get(), &info) < 0) fail(group, "a readable group", "one HDF5 cannot list");
  if (info.nlinks > 100000) fail(group, "at most 100000 members", std::to_string(info.nlinks));
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0 || len > 4096) fail(group, "member names of at most 4096 bytes", "an unreadable name");
    std::string name(static_cast<std::size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<std::size_t>(len));
    names.push_back(std::move(name));
  }
  return names;
}

bool Reader::has_attribute(const std::string& object, const std::string& attr) const {
  const std::string at = object.empty() ? "/" : object;
  if (at != "/" && !link_chain_exists(file_.get(), at)) return false;
  return H5Aexists_by_name(file_.get(), at.c_str(), attr.c_str(), H5P_DEFAULT) > 0;
}

namespace {

// Reads every element of a string attribute (fixed or variable length). Returns false
// when the attribute is not a string type.
bool read_strings(hid_t attr, std::vector<std::string>& out, std::string& why) {
  Handle type(H5Aget_type(attr));
  Handle space(H5Aget_space(attr));
  if (!type.valid() || !space.valid()) {
    why = "an unreadable attribute";
    return false;
  }
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0 || n > 1000000) {
    why = "an attribute of " + std::to_string(n) + " elements";
    return false;
  }
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_STRING) {
    if (n == 0) return true;  // h5py writes an empty list as an empty float64 array
    why = "a non-string attribute";
    return false;
  }
  const auto count = static_cast<std::size_t>(n);
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    std::vector<char*> ptrs(count, nullptr);
    if (count > 0 && H5Aread(attr, mem.get(), ptrs.data()) < 0) {
      why = "an unreadable string attribute";
      return false;
    }
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    if (count > 0) H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
    return true;
  }
  const std::size_t size = H5Tget_size(type.get());
  if (size == 0 || size > (std::size_t{1} << 24) / std::max<std::size_t>(count, 1)) {
    why = "fixed-length strings of " + std::to_string(size) + " bytes";
    return false;
  }
  std::vector<char> buf(size * count + 1, '\0');
  if (count > 0 && H5Aread(attr, type.get(), buf.data()) < 0) {
    why = "an unreadable string attribute";
    return false;
  }
  for (std::size_t i = 0; i < count; ++i) {
    const char* p = buf.data() + i * size;
    out.emplace_back(p, strnlen(p, size));
  }
  return true;
}

}  // namespace

std::string Reader::string_attribute(const std::string& object, const std::string& attr) const {
  if (!has_attribute(object, attr)) fail(object + " @" + attr, "an attribute", "none");
  Handle a(H5Aopen_by_name(file_.get(), object.empty() ? "/" : object.c_str(), attr.c_str(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid()) fail(object + " @" + attr, "a readable attribute", "one HDF5 cannot open");
  std::vector<std::string> values;
  std::string why;
  if (!read_strings(a.get(), values, why)) fail(object + " @" + attr, "a string", why);
  if (values.size() != 1) fail(object + " @" + attr, "one string", std::to_string(values.size()) + " strings");
  return values.front();
}

std::vector<std::string> Reader::string_list_attribute(const std::string& object, const std::string& attr) const {
  auto read_one = [&](const std::string& a_name, std::vector<std::string>& out) {
    Handle a(H5Aopen_by_name(file_.get(), object.empty() ? "/" : object.c_str(), a_name.c_str(), H5P_DEFAULT,
                             H5P_DEFAULT));
    if (!a.valid()) fail(object + " @" + a_name, "a readable attribute", "one HDF5 cannot open");
    std::string why;
    if (!read_strings(a.get(), out, why)) fail(object + " @" + a_name, "a list of strings", why);
  };
  std::vector<std::string> out;
  if (has_attribute(object, attr)) {
    read_one(attr, out);
    return out;
  }
  // Keras's chunked attributes: attr0, attr1, ...
  if (!has_attribute(object, attr + "0")) fail(object + " @" + attr, "an attribute", "none");
  for (int chunk = 0; has_attribute(object, attr + std::to_string(chunk)); ++chunk) {
    read_one(attr + std::to_string(chunk), out);
  }
  return out;
}

std::optional<std::int64_t> Reader::read_integer_scalar(const std::string& path) const {
  if (!has_dataset(path)) return std::nullopt;
  Handle d(H5Dopen2(file_.get(), path.c_str(), H5P_DEFAULT));
  if (!d.valid()) return std::nullopt;
  Handle type(H5Dget_type(d.get()));
  Handle space(H5Dget_space(d.get()));
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Sget_simple_extent_npoints(space.get()) != 1) return std::nullopt;
  std::int64_t value = 0;
  if (H5Dread(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0) return std::nullopt;
  return value;
}

Tensor Reader::read_floats(const std::string& path, const std::string& what, bool allow_integers) const {
  require_hard_links(path);
  if (!has_dataset(path)) fail(what, "a dataset at " + path, "another kind of object");
  Handle d(H5Dopen2(file_.get(), path.c_str(), H5P_DEFAULT));
  if (!d.valid()) fail(what, "a readable dataset at " + path, "one HDF5 cannot open");
  Handle type(H5Dget_type(d.get()));
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_FLOAT && !(allow_integers && cls == H5T_INTEGER)) {
    const std::string got = cls == H5T_INTEGER ? "integers" : cls == H5T_STRING ? "strings" : "a non-float type";
    fail(what, "float values (float32, float64, float16)", got + " at " + path);
  }
  // Virtual or external storage is refused (as Keras's safe_get_h5_dataset does).
  {
    Handle plist(H5Dget_create_plist(d.get()));
    const H5D_layout_t layout = H5Pget_layout(plist.get());
    if (layout == H5D_VIRTUAL) fail(what, "stored data", "a virtual dataset at " + path);
    if (H5Pget_external_count(plist.get()) > 0) fail(what, "stored data", "external storage at " + path);
  }
  Handle space(H5Dget_space(d.get()));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || rank > kMaxRank) fail(what, "at most " + std::to_string(kMaxRank) + " dimensions", std::to_string(rank));
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  std::int64_t numel = 1;
  std::vector<std::int64_t> shape;
  for (const hsize_t dim : dims) {
    if (dim > static_cast<hsize_t>(kMaxBytes)) fail(what, "a dataset under 4 GiB", "a dimension of " + std::to_string(dim));
    numel *= static_cast<std::int64_t>(dim);
    if (numel * 4 > kMaxBytes) fail(what, "a dataset under 4 GiB", "more elements at " + path);
    shape.push_back(static_cast<std::int64_t>(dim));
  }
  const std::size_t elem = H5Tget_size(type.get());
  const auto declared = static_cast<std::int64_t>(elem) * numel;
  const auto stored = static_cast<std::int64_t>(H5Dget_storage_size(d.get()));
  // A "shape bomb": far more declared than stored (fill values would be made up).
  if (numel > 0 && stored < declared && declared > 1000 * stored) {
    fail(what, "a dataset holding its data (" + std::to_string(declared) + " bytes)",
         std::to_string(stored) + " bytes stored at " + path);
  }
  Tensor out{Shape(shape)};
  if (numel > 0 && H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0) {
    fail(what, "readable data at " + path, "data HDF5 cannot read (truncated or corrupt)");
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Writer

Writer::Writer() {
  quiet();
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS));
  // In memory only (backing_store = 0), grown 1 MiB at a time.
  H5Pset_fapl_core(fapl.get(), std::size_t{1} << 20, 0);
  // The oldest format every reader (h5py of any version) understands.
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_EARLIEST, H5F_LIBVER_LATEST);
  file_ = Handle(H5Fcreate("bnorm-in-memory.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
  if (!file_.valid()) throw FileError("write", "HDF5 file", "an in-memory HDF5 file", "HDF5 could not create one");
}

void Writer::make_groups(const std::string& path) {
  std::string at;
  for (const std::string& part : split_path(path)) {
    at += "/" + part;
    if (H5Lexists(file_.get(), at.c_str(), H5P_DEFAULT) > 0) continue;
    Handle g(H5Gcreate2(file_.get(), at.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (!g.valid()) throw FileError("write", at, "a new HDF5 group", "HDF5 could not create it");
  }
}

void Writer::write_floats(const std::string& path, const Tensor& value) {
  const std::size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) make_groups(path.substr(0, slash));
  std::vector<hsize_t> dims;
  for (const std::int64_t d : value.shape().dims()) dims.push_back(static_cast<hsize_t>(d));
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  Handle d(H5Dcreate2(file_.get(), path.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.valid()) throw FileError("write", path, "a new HDF5 dataset", "HDF5 could not create it");
  if (value.numel() > 0 && H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, value.data()) < 0) {
    throw FileError("write", path, "the dataset written", "HDF5 could not write it");
  }
}

void Writer::write_int64(const std::string& path, std::int64_t value) {
  const std::size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) make_groups(path.substr(0, slash));
  Handle space(H5Screate(H5S_SCALAR));
  Handle d(H5Dcreate2(file_.get(), path.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.valid() || H5Dwrite(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0) {
    throw FileError("write", path, "an integer dataset", "HDF5 could not write it");
  }
}

namespace {
Handle vlen_utf8() {
  Handle t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}
}  // namespace

void Writer::string_attribute(const std::string& object, const std::string& attr, const std::string& value) {
  Handle type = vlen_utf8();
  Handle space(H5Screate(H5S_SCALAR));
  Handle a(H5Acreate_by_name(file_.get(), object.empty() ? "/" : object.c_str(), attr.c_str(), type.get(),
                             space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  const char* p = value.c_str();
  if (!a.valid() || H5Awrite(a.get(), type.get(), &p) < 0) {
    throw FileError("write", object + " @" + attr, "a string attribute", "HDF5 could not write it");
  }
}

void Writer::string_list_attribute(const std::string& object, const std::string& attr,
                                   const std::vector<std::string>& values) {
  const char* at = object.empty() ? "/" : object.c_str();
  if (values.empty()) {
    hsize_t zero = 0;
    Handle space(H5Screate_simple(1, &zero, nullptr));
    Handle a(H5Acreate_by_name(file_.get(), at, attr.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                               H5P_DEFAULT));
    if (!a.valid()) throw FileError("write", object + " @" + attr, "an empty list attribute", "HDF5 could not write it");
    return;
  }
  Handle type = vlen_utf8();
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr));
  Handle a(H5Acreate_by_name(file_.get(), at, attr.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT));
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (!a.valid() || H5Awrite(a.get(), type.get(), ptrs.data()) < 0) {
    throw FileError("write", object + " @" + attr, "a string list attribute", "HDF5 could not write it");
  }
}

std::string Writer::finish() {
  if (H5Fflush(file_.get(), H5F_SCOPE_GLOBAL) < 0) throw FileError("write", "HDF5 file", "a flushed file", "HDF5 could not flush");
  const ssize_t size = H5Fget_file_image(file_.get(), nullptr, 0);
  if (size <= 0) throw FileError("write", "HDF5 file", "the file's bytes", "HDF5 gave none");
  std::string bytes(static_cast<std::size_t>(size), '\0');
  if (H5Fget_file_image(file_.get(), bytes.data(), bytes.size()) != size) {
    throw FileError("write", "HDF5 file", "the file's bytes", "HDF5 gave fewer");
  }
  file_.reset();
  return bytes;
}

}  // namespace bnorm::io::h5
