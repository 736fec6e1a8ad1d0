#pragma once

#include <cstddef>
#include <vector>

namespace tact::detail {

/// A first-in first-out queue for a transport's pending writes. Unlike
/// std::deque it allocates nothing while empty, which is what nearly every
/// idle connection is, and it releases its memory once drained.
template <class T>
class fifo {
public:
  // Drained slots are released as soon as the last item goes (pop_front),
  // so an empty queue holds no items at all.
  [[nodiscard]] bool empty() const noexcept { return items_.empty(); }

  [[nodiscard]] size_t size() const noexcept { return items_.size() - first_; }

  /// The `i`-th item from the front.
  [[nodiscard]] T& at(size_t i) noexcept { return items_[first_ + i]; }

  [[nodiscard]] T& front() noexcept { return items_[first_]; }

  void push_back(T&& x) { items_.push_back(std::move(x)); }

  void pop_front() {
    items_[first_++] = T{};
    if (first_ == items_.size()) {
      first_ = 0;
      items_.clear();
      if (items_.capacity() > 64)
        items_.shrink_to_fit();
    } else if (first_ >= 64 && first_ * 2 >= items_.size()) {
      // Never more dead slots than live ones.
      items_.erase(items_.begin(),
                   items_.begin() + static_cast<std::ptrdiff_t>(first_));
      first_ = 0;
    }
  }

  void clear() {
    items_ = {};
    first_ = 0;
  }

private:
  std::vector<T> items_;
  size_t first_ = 0;
};

} // namespace tact::detail
