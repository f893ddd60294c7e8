// bnorm/nn/updates.hpp: collected moving-statistic updates, the C++ counterpart of TF1's
// UPDATE_OPS collection.
//
// In collected mode (pass an UpdateCollection to a training-mode forward call), batch
// normalization layers normalize with batch statistics but do NOT touch their moving
// statistics: they record the update here. The caller applies it (for example only
// after a step whose loss is finite) or discards it.
//
// Several updates recorded for the same layer (micro-batches of one batch, for gradient
// accumulation) merge exactly by element count into the statistics of the whole batch:
// their double moments (StatisticsUpdate::moments) merge by Chan's parallel formula
// (ChannelMoments, bnorm/nn/channel_moments.hpp) and the float batch mean and biased
// variance are the rounding of the merged ones. So one apply() equals one training call
// on the concatenated batch, within the float rounding of the statistics (relative 1e-6
// is tested, for any split into unequal, one-element and empty micro-batches, at offsets
// up to 1e7 times the spread; empty micro-batches record nothing).
//
// Updates that are neither applied nor discarded are reported: the destructor writes a
// warning to stderr naming the layers, and pending() tells how many are waiting.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "bnorm/nn/batch_normalization.hpp"

namespace bnorm::nn {

class UpdateSink {
 public:
  virtual ~UpdateSink() = default;
  virtual void record(BatchNormalization& layer, const StatisticsUpdate& update) = 0;
};

class UpdateCollection : public UpdateSink {
 public:
  UpdateCollection() = default;
  UpdateCollection(const UpdateCollection&) = delete;
  UpdateCollection& operator=(const UpdateCollection&) = delete;
  ~UpdateCollection() override;

  // Merges with a pending update of the same layer (merge_update). An update with count 0
  // is ignored. ShapeError when the statistics (float, or double moments when present)
  // do not have the layer's channel count (nothing recorded).
  void record(BatchNormalization& layer, const StatisticsUpdate& update) override;

  // Applies every pending update to its layer, then clears. Validates all first: when
  // one would fail (non-finite statistics), nothing is applied and the collection keeps
  // its updates.
  void apply();
  void discard() noexcept { pending_.clear(); }
  std::size_t pending() const noexcept { return pending_.size(); }
  // The pending update of a layer, or null.
  const StatisticsUpdate* find(const BatchNormalization& layer) const;

 private:
  struct Pending {
    BatchNormalization* layer;
    StatisticsUpdate update;
  };
  std::vector<Pending> pending_;
};

// Merges update b into a: a becomes the update of the union of both batches (ASSIGNED).
//   a.moments = merge(moments of a, moments of b)        (ChannelMoments::merge)
//   a.batch_mean, a.batch_variance = its mean and m2 / count, rounded to float (a's
//   shapes are kept);  a.count = a.count + b.count
// The moments of an update are its `moments` field when present (what training calls
// record), else those of its float fields. b with count 0 leaves a unchanged; a with
// count 0 becomes a copy of b. ShapeError when the two have different channel counts
// (a unchanged).
void merge_update(StatisticsUpdate& a, const StatisticsUpdate& b);

}  // namespace bnorm::nn
