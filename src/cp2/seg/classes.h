// Class names, palettes and label conventions of the finetuning datasets (SPEC §6).
#pragma once
#include <string>
#include <vector>

#include "cp2/seg/label_png.h"

namespace cp2::seg {

const std::vector<std::string>& voc_classes();         // 21, background first
const std::vector<std::string>& cityscapes_classes();  // 19 train ids
const std::vector<std::string>& ade20k_classes();      // 150 (label 0 "other" is ignored)

// VOC's colour map (bits of the label spread over R, G, B), for any class count.
Palette voc_palette(int n = 256);
// Cityscapes' official colours of the 19 train ids.
Palette cityscapes_palette();

// The class names and palette a dataset type ships with (voc, cityscapes, ade20k); empty
// for other types (the list type brings its own names).
std::vector<std::string> classes_of(const std::string& type);
Palette palette_of(const std::string& type);

// Cityscapes labelIds (0..33) -> train ids (0..18), 255 for ids not evaluated.
int cityscapes_train_id(int label_id);

}  // namespace cp2::seg
