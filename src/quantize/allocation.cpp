// quantize/allocation.cpp: see allocation.h.
#include "quantize/allocation.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"

namespace trellis::quant {

double allocate_bits(std::vector<AllocTensor>& tensors, double bits, int num_layers) {
  if (!(bits >= 1.0 && bits <= 8.0))
    fail(ErrorKind::kInvalidArgument, "bits {} is outside 1..8", bits);
  const int base = static_cast<int>(std::floor(bits));
  int64_t total = 0;
  for (auto& t : tensors) {
    t.K = base;
    total += t.numel;
  }
  const auto budget = static_cast<int64_t>(bits * static_cast<double>(total));
  int64_t used = 0;
  for (const auto& t : tensors) used += t.numel * t.K;

  // Groups in order: priority (high first), distance to the nearer end of the stack, layer,
  // definition order (first appearance).
  struct Group {
    int id, priority, dist, layer, first;
    std::vector<size_t> members;
  };
  std::map<int, Group> by_id;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    auto [it, inserted] = by_id.try_emplace(t.group);
    if (inserted) {
      const int dist = std::min(t.layer, std::max(0, num_layers - 1 - t.layer));
      it->second = Group{t.group, t.priority, dist, t.layer, static_cast<int>(i), {}};
    }
    it->second.members.push_back(i);
  }
  std::vector<Group> groups;
  for (auto& [id, g] : by_id) groups.push_back(std::move(g));
  std::stable_sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    if (a.dist != b.dist) return a.dist < b.dist;
    if (a.layer != b.layer) return a.layer < b.layer;
    return a.first < b.first;
  });
  for (bool changed = true; changed;) {
    changed = false;
    for (const Group& g : groups) {
      int64_t cost = 0;
      for (size_t i : g.members)
        if (tensors[i].K < 8) cost += tensors[i].numel;
      if (cost == 0 || used + cost > budget) continue;
      for (size_t i : g.members)
        if (tensors[i].K < 8) ++tensors[i].K;
      used += cost;
      changed = true;
    }
  }
  double weighted = 0;
  for (const auto& t : tensors) weighted += static_cast<double>(t.numel) * t.K;
  return total > 0 ? std::round(weighted / static_cast<double>(total) * 100.0) / 100.0 : base;
}

}  // namespace trellis::quant
