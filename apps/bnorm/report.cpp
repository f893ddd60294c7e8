// The experiment's report folder: CSV, gnuplot scripts and figures, summary.md.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "bnorm/io/idx.hpp"
#include "experiment.hpp"
#include "gnuplot.hpp"

namespace bnorm::cli {

namespace fs = std::filesystem;

namespace {

void write_file(const fs::path& path, const std::string& text, ReportFiles& files) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  f.close();
  if (!f) throw io::FileError("bnorm experiment", path.string(), "a writable file", std::strerror(errno));
  files.written.push_back(path);
}

std::string num(double v, const char* format = "%.6g") {
  if (std::isnan(v)) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string accuracy_csv(const ExperimentResult& r) {
  std::string s =
      "step,plain_test_accuracy,batchnorm_test_accuracy,plain_test_loss,batchnorm_test_loss,"
      "plain_train_loss,batchnorm_train_loss\n";
  for (const auto& p : r.points) {
    s += std::to_string(p.step);
    for (double v : {p.test_accuracy[0], p.test_accuracy[1], p.test_loss[0], p.test_loss[1], p.train_loss[0],
                     p.train_loss[1]}) {
      s += ',';  // (s += "," + num(v) trips GCC 12's false -Wrestrict positive)
      s += num(v);
    }
    s += '\n';
  }
  return s;
}

std::string percentiles_csv(const ExperimentResult& r) {
  std::string s = "step,plain_p15,plain_p50,plain_p85,batchnorm_p15,batchnorm_p50,batchnorm_p85\n";
  for (const auto& p : r.points) {
    s += std::to_string(p.step);
    for (int k = 0; k < 2; ++k)
      for (double v : p.percentiles[k]) {
        s += ',';  // (s += "," + num(v) trips GCC 12's false -Wrestrict positive)
        s += num(v);
      }
    s += "\n";
  }
  return s;
}

std::string setup_line(const ExperimentOptions& o) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "784-100-100-100-10 sigmoid MLP, SGD lr %g, batch %lld, seed %llu",
                *o.learning_rate, static_cast<long long>(o.batch_size),
                static_cast<unsigned long long>(o.seed));
  return buf;
}

std::string accuracy_gp(const ExperimentOptions& o, const ExperimentResult& r) {
  double lowest = 1.0;
  for (const auto& p : r.points)
    for (int k = 0; k < 2; ++k)
      if (p.step > 0) lowest = std::min(lowest, p.test_accuracy[k]);
  // Start the axis below the first evaluated accuracy after step 0, at a multiple of 0.1.
  const double ymin =
      std::max(0.0, std::floor(std::min(lowest, o.target_accuracy) * 10.0 - 1e-9) / 10.0 - 0.1);
  std::ostringstream g;
  g << "# gnuplot script written by `bnorm experiment`; run `gnuplot accuracy.gp` in this folder.\n"
    << png_terminal(900, 560) << "set output 'accuracy.png'\n"
    << "set datafile separator ','\n"
    << "set title \"Test accuracy on Fashion-MNIST, with and without batch normalization\\n{/*0.85 "
    << setup_line(o) << "; inference mode, 10,000 test images}\"\n"
    << "set xlabel 'training steps (batches of " << o.batch_size << ")'\n"
    << "set ylabel 'test accuracy'\n"
    << "set yrange [" << ymin * 100 << ":100]\n"
    << "set xrange [0:" << o.steps << "]\n"
    << "set format y '%.0f%%'\n"
    << "set grid\n"
    << "set key bottom right box opaque\n"
    << "plot 'accuracy.csv' skip 1 using 1:($2*100) with lines lw 2 lc rgb '#d62728' title 'without batch "
       "norm', \\\n"
    << "     ''             skip 1 using 1:($3*100) with lines lw 2 lc rgb '#1f77b4' title 'with batch "
       "norm', \\\n"
    << "     " << o.target_accuracy * 100 << " with lines dt 2 lc rgb '#555555' title 'target "
    << num(o.target_accuracy * 100, "%g") << "%'\n";
  return g.str();
}

std::string percentiles_gp(const ExperimentOptions& o, const ExperimentResult& r) {
  // One y range for both panels, so that the spread and drift compare at a glance.
  double lo = 0, hi = 0;
  for (const auto& p : r.points)
    for (int k = 0; k < 2; ++k)
      lo = std::min(lo, p.percentiles[k][0]), hi = std::max(hi, p.percentiles[k][2]);
  const double pad = 0.05 * (hi - lo) + 1e-6;
  std::ostringstream g;
  g << "# gnuplot script written by `bnorm experiment`; run `gnuplot percentiles.gp` in this folder.\n"
    << png_terminal(1200, 520) << "set output 'percentiles.png'\n"
    << "set datafile separator ','\n"
    << "set multiplot layout 1,2 title \"Input of sigmoid unit " << o.unit
    << " in the last hidden layer: 15th, 50th and 85th percentiles over the test images\\n{/*0.85 "
    << "dashed: 85th percentile, solid: median, dotted: 15th percentile. " << setup_line(o)
    << "; inference mode}\"\n"
    << "set xlabel 'training steps'\n"
    << "set ylabel 'sigmoid input'\n"
    << "set xrange [0:" << o.steps << "]\n"
    << "set yrange [" << lo - pad << ":" << hi + pad << "]\n"
    << "set grid\n"
    << "unset key\n"
    << "set style fill transparent solid 0.2 noborder\n";
  const char* colors[2] = {"#d62728", "#1f77b4"};
  const char* titles[2] = {"(a) without batch normalization: Dense output",
                           "(b) with batch normalization: BatchNormalization output"};
  for (int k = 0; k < 2; ++k) {
    const int c = 2 + 3 * k;  // CSV columns of this network's 15th, 50th, 85th percentiles
    g << "set title '" << titles[k] << "'\n"
      << "plot 'percentiles.csv' skip 1 using 1:" << c << ":" << c + 2 << " with filledcurves lc rgb '"
      << colors[k] << "' notitle, \\\n"
      << "     '' skip 1 using 1:" << c + 2 << " with lines lw 1.5 dt 2 lc rgb '" << colors[k]
      << "' title '85th percentile', \\\n"
      << "     '' skip 1 using 1:" << c + 1 << " with lines lw 2.5 lc rgb '" << colors[k]
      << "' title 'median', \\\n"
      << "     '' skip 1 using 1:" << c << " with lines lw 1.5 dt 3 lc rgb '" << colors[k]
      << "' title '15th percentile'\n";
  }
  g << "unset multiplot\n";
  return g.str();
}

// The spread of a network's tracked percentiles over the evaluations after step 0.
struct Spread {
  double median_min = INFINITY, median_max = -INFINITY;
  double width_min = INFINITY, width_max = -INFINITY;  // 85th - 15th
};

Spread spread(const ExperimentResult& r, int k) {
  Spread s;
  for (const auto& p : r.points) {
    if (p.step == 0) continue;
    const auto& q = p.percentiles[k];
    s.median_min = std::min(s.median_min, q[1]), s.median_max = std::max(s.median_max, q[1]);
    s.width_min = std::min(s.width_min, q[2] - q[0]), s.width_max = std::max(s.width_max, q[2] - q[0]);
  }
  return s;
}

std::string summary_md(const ExperimentOptions& o, const ExperimentResult& r, const ReportFiles& files) {
  const auto& first = r.points.front();
  const auto& last = r.points.back();
  const auto target = num(o.target_accuracy * 100, "%g") + "%";
  std::ostringstream m;
  m << "# Batch normalization on Fashion-MNIST: Ioffe & Szegedy 2015, Figure 1\n\n"
    << "Two 784-100-100-100-10 networks with sigmoid hidden units and a softmax output, trained "
    << "by SGD (learning rate " << *o.learning_rate << ", no momentum) on batches of " << o.batch_size
    << " for " << o.steps << " steps, one **without** and one **with** batch normalization "
    << "(Dense without bias -> BatchNormalization -> sigmoid in each hidden layer; momentum " << o.momentum
    << ", epsilon 0.001). Both start from the "
    << "same kernels (" << o.initializer << ", seed " << o.seed << ") and see the same batches. Every "
    << o.eval_every << " steps both are evaluated in inference mode on the " << r.test_images
    << " test images.\n\n";
  m << "| | without batch norm | with batch norm |\n|---|---:|---:|\n";
  m << "| steps to " << target << " test accuracy |";
  for (int k = 0; k < 2; ++k)
    m << " "
      << (r.steps_to_target[k] ? std::to_string(*r.steps_to_target[k])
                               : "not within " + std::to_string(o.steps))
      << " |";
  m << "\n| final test accuracy |";
  for (int k = 0; k < 2; ++k) m << " " << num(last.test_accuracy[k] * 100, "%.2f") << "% |";
  m << "\n| final test loss |";
  for (int k = 0; k < 2; ++k) m << " " << num(last.test_loss[k], "%.4f") << " |";
  m << "\n| unit " << o.unit << "'s input at step 0: 15th / 50th / 85th percentile |";
  for (int k = 0; k < 2; ++k)
    m << " " << num(first.percentiles[k][0], "%.2f") << " / " << num(first.percentiles[k][1], "%.2f") << " / "
      << num(first.percentiles[k][2], "%.2f") << " |";
  m << "\n| ... at step " << last.step << " |";
  for (int k = 0; k < 2; ++k)
    m << " " << num(last.percentiles[k][0], "%.2f") << " / " << num(last.percentiles[k][1], "%.2f") << " / "
      << num(last.percentiles[k][2], "%.2f") << " |";
  std::array<Spread, 2> s{spread(r, 0), spread(r, 1)};
  m << "\n| median over the run (after step 0): min ... max |";
  for (int k = 0; k < 2; ++k)
    m << " " << num(s[k].median_min, "%.2f") << " ... " << num(s[k].median_max, "%.2f") << " |";
  m << "\n| 85th - 15th percentile over the run: min ... max |";
  for (int k = 0; k < 2; ++k)
    m << " " << num(s[k].width_min, "%.2f") << " ... " << num(s[k].width_max, "%.2f") << " |";
  m << "\n\n";

  // What the numbers say, in words.
  if (r.steps_to_target[0] && r.steps_to_target[1]) {
    const double ratio =
        static_cast<double>(*r.steps_to_target[0]) / static_cast<double>(*r.steps_to_target[1]);
    m << "The network with batch normalization reaches " << target << " test accuracy after "
      << *r.steps_to_target[1] << " steps, the one without after " << *r.steps_to_target[0] << " ("
      << num(ratio, "%.1f") << " times as many).";
  } else if (r.steps_to_target[1]) {
    m << "The network with batch normalization reaches " << target << " test accuracy after "
      << *r.steps_to_target[1] << " steps; the one without does not within " << o.steps << " steps.";
  } else if (r.steps_to_target[0]) {
    m << "The network without batch normalization reaches " << target << " test accuracy after "
      << *r.steps_to_target[0] << " steps; the one with it does not within " << o.steps << " steps.";
  } else {
    m << "Neither network reaches " << target << " test accuracy within " << o.steps << " steps.";
  }
  m << " Steps are counted at evaluation points (every " << o.eval_every << " steps).\n\n";
  // Location and scale of the tracked input over the run (after step 0, where both
  // networks still compute the same thing).
  const EvalPoint* after0 = r.points.size() > 1 ? &r.points[1] : &r.points.front();
  for (int k = 0; k < 2; ++k) {
    const auto& a = after0->percentiles[k];
    const auto& b = last.percentiles[k];
    m << (k == 0 ? "Without" : "with") << " batch normalization, the tracked input's median goes from "
      << num(a[1], "%.2f") << " (step " << after0->step << ") to " << num(b[1], "%.2f") << " (step " << last.step
      << "), within " << num(s[k].median_min, "%.2f") << " ... " << num(s[k].median_max, "%.2f")
      << " over the run, and its 15th-85th percentile width from " << num(a[2] - a[0], "%.2f") << " (step "
      << after0->step << ") to " << num(b[2] - b[0], "%.2f") << " (step " << last.step << "), within "
      << num(s[k].width_min, "%.2f") << " ... " << num(s[k].width_max, "%.2f") << " (the widest "
      << num(s[k].width_max / s[k].width_min, "%.1f") << " times the narrowest)" << (k == 0 ? "; " : ".\n\n");
  }
  const bool have_png = !files.plot_problem;
  if (have_png) {
    m << "![Test accuracy over training steps](accuracy.png)\n\n"
      << "![Percentiles of one last-hidden-layer sigmoid input over training steps](percentiles.png)\n\n";
  } else {
    m << "Figures not drawn: " << *files.plot_problem << ". The numbers are in accuracy.csv and "
      << "percentiles.csv; `gnuplot accuracy.gp` and `gnuplot percentiles.gp` in this folder draw them.\n\n";
  }
  m << "Files: `accuracy.csv` (test accuracy and loss, mean training loss since the previous point), "
    << "`percentiles.csv`, the gnuplot scripts `accuracy.gp` and `percentiles.gp`.\n\n"
    << "Time: " << num(r.seconds_training, "%.1f") << " s training, " << num(r.seconds_evaluating, "%.1f")
    << " s evaluating, " << num(r.seconds_total, "%.1f") << " s in all (" << r.threads
    << " batch-norm kernel threads).\n\n"
    << "Reproduce: `bnorm experiment --steps " << o.steps << " --batch-size " << o.batch_size
    << " --learning-rate " << *o.learning_rate << " --eval-every " << o.eval_every << " --target-accuracy "
    << o.target_accuracy << " --seed " << o.seed << " --unit " << o.unit << " --momentum " << o.momentum
    << " --init " << o.initializer << "`. "
    << "What the experiment is and why it is set up this way: docs/experiment.md.\n";
  return m.str();
}

}  // namespace

ReportFiles write_report(const ExperimentOptions& o, const ExperimentResult& r) {
  ReportFiles files;
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out)) {
    throw io::FileError("bnorm experiment", "--out " + o.out.string(), "a folder that can be created",
                        ec ? ec.message() : "not a directory");
  }
  write_file(o.out / "accuracy.csv", accuracy_csv(r), files);
  write_file(o.out / "percentiles.csv", percentiles_csv(r), files);
  write_file(o.out / "accuracy.gp", accuracy_gp(o, r), files);
  write_file(o.out / "percentiles.gp", percentiles_gp(o, r), files);
  for (const char* png : {"accuracy.png", "percentiles.png"})
    fs::remove(o.out / png, ec);  // no stale figures

  const auto gnuplot = find_on_path("gnuplot");
  if (!gnuplot) {
    files.plot_problem = kNoGnuplot;
  } else {
    for (const char* script : {"accuracy.gp", "percentiles.gp"}) {
      const std::string problem = run_gnuplot(*gnuplot, o.out, script);
      if (!problem.empty()) {
        files.plot_problem = problem;
        break;
      }
      const fs::path png = o.out / (std::string(script, std::strlen(script) - 3) + ".png");
      if (!fs::exists(png)) {
        files.plot_problem = std::string("gnuplot ") + script + " wrote no " + png.filename().string();
        break;
      }
      files.written.push_back(png);
    }
  }
  write_file(o.out / "summary.md", summary_md(o, r, files), files);
  return files;
}

}  // namespace bnorm::cli
