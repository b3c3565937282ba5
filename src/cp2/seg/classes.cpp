#include "cp2/seg/classes.h"

namespace cp2::seg {

const std::vector<std::string>& voc_classes() {
  static const std::vector<std::string> c{
      "background", "aeroplane", "bicycle", "bird",  "boat",        "bottle", "bus",
      "car",        "cat",       "chair",   "cow",   "diningtable", "dog",    "horse",
      "motorbike",  "person",    "pottedplant", "sheep", "sofa",    "train",  "tvmonitor"};
  return c;
}

const std::vector<std::string>& cityscapes_classes() {
  static const std::vector<std::string> c{"road",   "sidewalk",   "building", "wall",  "fence",
                                          "pole",   "traffic light", "traffic sign", "vegetation", "terrain",
                                          "sky",    "person",     "rider",    "car",   "truck",
                                          "bus",    "train",      "motorcycle", "bicycle"};
  return c;
}

const std::vector<std::string>& ade20k_classes() {
  // SceneParsing objectInfo150 names, in label order 1..150.
  static const std::vector<std::string> c{
      "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
      "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
      "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
      "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
      "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
      "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
      "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
      "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel",
      "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
      "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
      "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
      "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
      "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
      "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
      "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag"};
  return c;
}

Palette voc_palette(int n) {
  Palette p(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    int c = i, r = 0, g = 0, b = 0;
    for (int j = 7; j >= 0 && c; --j, c >>= 3) {
      r |= (c & 1) << j;
      g |= (c >> 1 & 1) << j;
      b |= (c >> 2 & 1) << j;
    }
    p[i] = {static_cast<uint8_t>(r), static_cast<uint8_t>(g), static_cast<uint8_t>(b)};
  }
  return p;
}

Palette cityscapes_palette() {
  return {{128, 64, 128}, {244, 35, 232}, {70, 70, 70},   {102, 102, 156}, {190, 153, 153}, {153, 153, 153},
          {250, 170, 30}, {220, 220, 0},  {107, 142, 35}, {152, 251, 152}, {70, 130, 180},  {220, 20, 60},
          {255, 0, 0},    {0, 0, 142},    {0, 0, 70},     {0, 60, 100},    {0, 80, 100},    {0, 0, 230},
          {119, 11, 32}};
}

std::vector<std::string> classes_of(const std::string& type) {
  if (type == "voc") return voc_classes();
  if (type == "cityscapes") return cityscapes_classes();
  if (type == "ade20k") return ade20k_classes();
  return {};
}

Palette palette_of(const std::string& type) {
  if (type == "cityscapes") return cityscapes_palette();
  if (type == "ade20k") return voc_palette(150);
  return voc_palette();
}

int cityscapes_train_id(int id) {
  static const int map[34] = {255, 255, 255, 255, 255, 255, 255, 0,   1,  255, 255, 2,  3,  4,  255, 255, 255,
                              5,   255, 6,   7,   8,   9,   10,  11,  12, 13,  14,  15, 255, 255, 16, 17, 18};
  return id >= 0 && id < 34 ? map[id] : 255;
}

}  // namespace cp2::seg
