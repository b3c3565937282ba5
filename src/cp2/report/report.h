// `cp2 report`: one self-contained HTML page for run folders and protocol folders (no
// network, no JavaScript): charts as inline SVG, pictures as PNG data URIs.
// - pretraining run: loss parts, accuracies (with their chance levels) and lr over steps;
//   a grid of the run's composite views with their paste masks (its loader, first batch).
// - finetuning run: loss over iterations, mIoU over iterations, per-class IoU of the best
//   evaluation, predictions beside the ground truth (best.pt on the first val images).
// - `cp2 ablate` / `cp2 trials` folder (results.json): the Table 6 / Table 7 table, an
//   mIoU bar per row, then each of its runs.
#pragma once
#include <string>
#include <vector>

namespace cp2::report {

struct ReportOptions {
  int pictures = 4;   // composites / predictions per run (0 = none: no data or model read)
  std::string title;  // "" = from the inputs
};

// The page for `inputs` (run folders, protocol folders). Throws naming an input that is
// neither.
std::string render(const std::vector<std::string>& inputs, const ReportOptions& o);
// render() written atomically to `path`.
void write(const std::string& path, const std::vector<std::string>& inputs, const ReportOptions& o);

// Building blocks (tested on their own).
struct Series {
  std::string name;
  std::vector<double> x, y;
  bool dashed = false;
};
std::string line_chart(const std::string& title, const std::string& xlabel, const std::vector<Series>& series);
std::string bar_chart(const std::string& title, const std::vector<std::string>& labels, const std::vector<double>& values,
                      const std::string& unit);
std::string html_escape(const std::string& s);

}  // namespace cp2::report
