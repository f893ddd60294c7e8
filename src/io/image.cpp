// PNG (libpng's simplified API) and JPEG (libjpeg) decoding, and Keras's nearest resize.
#include "bnorm/io/image.hpp"

#include <png.h>
// jpeglib.h needs FILE and size_t first.
#include <jpeglib.h>
#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "file_bytes.hpp"

namespace bnorm::io {

namespace {

constexpr std::int64_t kMaxPixels = std::int64_t{1} << 28;  // 256 megapixels

bool is_png(std::string_view b) { return b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0; }
bool is_jpeg(std::string_view b) { return b.size() >= 3 && std::memcmp(b.data(), "\xff\xd8\xff", 3) == 0; }

void check_size(const std::string& path, std::int64_t width, std::int64_t height) {
  if (width < 1 || height < 1 || width * height > kMaxPixels) {
    throw FormatError(path, "image size", "at least 1 x 1 and at most 2^28 pixels",
                      std::to_string(width) + " x " + std::to_string(height));
  }
}

Tensor decode_png(const std::string& bytes, const std::string& path) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    const std::string why = image.message;
    png_image_free(&image);
    throw FormatError(path, "PNG", "a readable PNG image", "a damaged one (libpng: " + why + ")");
  }
  try {
    check_size(path, image.width, image.height);
  } catch (...) {
    png_image_free(&image);
    throw;
  }
  // RGBA, then the alpha dropped (Pillow's convert("RGB") drops it; libpng's RGB would
  // composite it onto a background).
  image.format = PNG_FORMAT_RGBA;
  std::vector<png_byte> rgba(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, rgba.data(), 0, nullptr)) {
    const std::string why = image.message;
    png_image_free(&image);
    throw FormatError(path, "PNG", "a readable PNG image", "a damaged one (libpng: " + why + ")");
  }
  const auto h = static_cast<std::int64_t>(image.height), w = static_cast<std::int64_t>(image.width);
  Tensor out(Shape{h, w, 3});
  for (std::int64_t p = 0; p < h * w; ++p)
    for (int c = 0; c < 3; ++c) out[p * 3 + c] = static_cast<float>(rgba[static_cast<std::size_t>(p * 4 + c)]);
  return out;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}  // warnings (corrupt-but-readable data) are not errors

// Decodes into `out`; returns an empty message on success. No C++ object with a
// destructor lives across the setjmp.
std::string decode_jpeg_into(const std::string& bytes, std::vector<unsigned char>& pixels, std::int64_t& width,
                             std::int64_t& height, bool& cmyk) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_quiet;
  err.message[0] = '\0';
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return err.message[0] ? err.message : "a decoding error";
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  if (cmyk) {
    jpeg_destroy_decompress(&cinfo);
    return "";
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  width = cinfo.output_width;
  height = cinfo.output_height;
  if (width < 1 || height < 1 || width * height > kMaxPixels) {
    jpeg_destroy_decompress(&cinfo);
    return "";
  }
  pixels.resize(static_cast<std::size_t>(width * height * 3));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = pixels.data() + static_cast<std::size_t>(cinfo.output_scanline) * static_cast<std::size_t>(width) * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return "";
}

Tensor decode_jpeg(const std::string& bytes, const std::string& path) {
  std::vector<unsigned char> pixels;
  std::int64_t width = 0, height = 0;
  bool cmyk = false;
  const std::string why = decode_jpeg_into(bytes, pixels, width, height, cmyk);
  if (!why.empty()) throw FormatError(path, "JPEG", "a readable JPEG image", "a damaged one (libjpeg: " + why + ")");
  if (cmyk) throw FormatError(path, "JPEG color space", "grayscale, RGB or YCbCr", "CMYK");
  check_size(path, width, height);
  Tensor out(Shape{height, width, 3});
  for (std::int64_t i = 0; i < out.numel(); ++i) out[i] = static_cast<float>(pixels[static_cast<std::size_t>(i)]);
  return out;
}

}  // namespace

bool is_image(std::string_view bytes) { return is_png(bytes) || is_jpeg(bytes); }

bool is_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[8] = {};
  in.read(head, sizeof head);
  return in.gcount() > 0 && is_image(std::string_view(head, static_cast<std::size_t>(in.gcount())));
}

Tensor read_image(const std::string& path) {
  const std::string bytes = read_file_bytes(path);
  if (is_png(bytes)) return decode_png(bytes, path);
  if (is_jpeg(bytes)) return decode_jpeg(bytes, path);
  throw FormatError(path, "", "a PNG or JPEG image", bytes.empty() ? "an empty file" : "a file in another format");
}

Tensor resize_nearest(const Tensor& image, std::int64_t height, std::int64_t width) {
  if (image.rank() != 3) throw ShapeError("resize_nearest", "image", "an (H, W, C) image", image.shape().str());
  if (height < 1 || width < 1) {
    throw ArgumentError("resize_nearest", "size", "at least 1 x 1", std::to_string(height) + " x " + std::to_string(width));
  }
  const std::int64_t h = image.dim(0), w = image.dim(1), c = image.dim(2);
  Tensor out(Shape{height, width, c});
  // Pillow's ImagingScaleAffine: the source position starts at half a step and ADDS the
  // step each time (in double), so a position that is an integer in exact arithmetic can
  // land just below it: reproduced as is (checked against Pillow on every size pair up to
  // 80 x 80).
  auto positions = [](std::int64_t in, std::int64_t out_size) {
    std::vector<std::int64_t> at(static_cast<std::size_t>(out_size));
    const double step = static_cast<double>(in) / static_cast<double>(out_size);
    double pos = step * 0.5;
    for (auto& v : at) {
      v = std::min(in - 1, static_cast<std::int64_t>(pos));
      pos += step;
    }
    return at;
  };
  const auto ys = positions(h, height), xs = positions(w, width);
  for (std::int64_t i = 0; i < height; ++i)
    for (std::int64_t j = 0; j < width; ++j)
      std::copy_n(image.data() + (ys[static_cast<std::size_t>(i)] * w + xs[static_cast<std::size_t>(j)]) * c, c,
                  out.data() + (i * width + j) * c);
  return out;
}

Tensor resize_bilinear(const Tensor& image, std::int64_t height, std::int64_t width) {
  if (image.rank() != 3)
    throw ShapeError("resize_bilinear", "image", "an (H, W, C) image", image.shape().str());
  if (height < 1 || width < 1) {
    throw ArgumentError("resize_bilinear", "size", "at least 1 x 1",
                        std::to_string(height) + " x " + std::to_string(width));
  }
  const std::int64_t h = image.dim(0), w = image.dim(1), c = image.dim(2);
  struct Tap {
    std::int64_t lo, hi;
    float t;
  };
  // TensorFlow's compute_interpolation_weights with HalfPixelScaler, in float.
  auto taps = [](std::int64_t in, std::int64_t out_size) {
    std::vector<Tap> at(static_cast<std::size_t>(out_size));
    const float scale = static_cast<float>(in) / static_cast<float>(out_size);
    for (std::int64_t i = 0; i < out_size; ++i) {
      const float p = (static_cast<float>(i) + 0.5f) * scale - 0.5f;
      const float p_floor = std::floor(p);
      at[static_cast<std::size_t>(i)] = {std::max(static_cast<std::int64_t>(p_floor), std::int64_t{0}),
                                         std::min(static_cast<std::int64_t>(std::ceil(p)), in - 1),
                                         p - p_floor};
    }
    return at;
  };
  const auto ys = taps(h, height), xs = taps(w, width);
  Tensor out(Shape{height, width, c});
  float* o = out.data();
  for (const Tap& y : ys) {
    const float* top_row = image.data() + y.lo * w * c;
    const float* bottom_row = image.data() + y.hi * w * c;
    for (const Tap& x : xs) {
      for (std::int64_t k = 0; k < c; ++k) {
        const float a = top_row[x.lo * c + k], b = top_row[x.hi * c + k];
        const float cc = bottom_row[x.lo * c + k], d = bottom_row[x.hi * c + k];
        const float top = a + (b - a) * x.t;
        const float bottom = cc + (d - cc) * x.t;
        *o++ = top + (bottom - top) * y.t;
      }
    }
  }
  return out;
}

Tensor load_image(const std::string& path, std::int64_t height, std::int64_t width) {
  const Tensor image = read_image(path);
  if (image.dim(0) == height && image.dim(1) == width) return image;
  return resize_nearest(image, height, width);
}

}  // namespace bnorm::io
