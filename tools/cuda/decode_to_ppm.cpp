// Decodes pictures with the engine's own decoder (engine/src/image.cpp, OpenCV) and writes them as
// binary PPM, for an engine built without OpenCV (MLMAMBA_WITH_OPENCV=OFF) to read the same pixels.
// Usage: decode_to_ppm IN OUT [IN OUT ...]
#include <cstdio>
#include <fstream>

#include "image.h"

int main(int argc, char** argv) {
  if (argc < 3 || argc % 2 == 0) {
    std::fprintf(stderr, "usage: decode_to_ppm IN OUT [IN OUT ...]\n");
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    auto img = mlmamba::decode_image_file(argv[i]);
    if (!img.ok()) {
      std::fprintf(stderr, "%s: %s\n", argv[i], img.error().message.c_str());
      return 1;
    }
    std::ofstream out(argv[i + 1], std::ios::binary | std::ios::trunc);
    out << "P6\n" << img->width << " " << img->height << "\n255\n";
    out.write(reinterpret_cast<const char*>(img->pixels.data()),
              static_cast<std::streamsize>(img->pixels.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", argv[i + 1]);
      return 1;
    }
  }
  return 0;
}
