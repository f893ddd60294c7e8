// The input of article 001 (np.random.seed(1); x = np.random.randn(10, 5) * 5 + 0.3),
// computed once with numpy and pasted here: C++ cannot reproduce numpy's generator.
#pragma once

#include <vector>

namespace example {

// clang-format off
inline const std::vector<float> kArticle001X = {  // np.random.seed(1); np.random.randn(10, 5) * 5 + 0.3
    8.421727f, -2.7587821f, -2.3408587f, -5.064843f, 4.627038f,
    -11.207693f, 9.024059f, -3.5060346f, 1.8951955f, -0.94685185f,
    7.61054f, -10.000704f, -1.312086f, -1.6202718f, 5.9688473f,
    -5.199456f, -0.56214106f, -4.089292f, 0.51106876f, 3.214076f,
    -5.203096f, 6.0236187f, 4.807954f, 2.8124716f, 4.80428f,
    -3.1186392f, -0.31445113f, -4.378847f, -1.0394404f, 2.9517772f,
    -3.1583037f, -1.6837677f, -3.1358635f, -3.9260283f, -3.0562305f,
    0.236677f, -5.286552f, 1.4720784f, 8.59901f, 4.010221f,
    -0.6591778f, -4.138145f, -3.4357915f, 8.762273f, 0.55403876f,
    -2.8849783f, 1.2545774f, 10.801275f, 0.90079474f, 3.3860157f};
// clang-format on

}  // namespace example
