// tact::task: lazy coroutines that await each other, driven here by hand
// (no loop): values, exceptions, waits that resume later, destruction.

#include <catch2/catch.hpp>

#include <coroutine>
#include <stdexcept>
#include <string>

#include "tact/actors/task.hpp"

using tact::task;

namespace {

// Runs a root task by hand until it first waits or ends.
template <class T>
void start(task<T>& t) {
  REQUIRE(t.valid());
  t.handle().resume();
}

task<int> one() {
  co_return 1;
}

task<long> sum_of_ones(long n) {
  long total = 0;
  for (long i = 0; i < n; ++i)
    total += co_await one();
  co_return total;
}

// A wait that resumes when the test says so.
struct gate {
  std::coroutine_handle<> waiting;

  auto wait() {
    struct awaiter {
      gate* g;
      [[nodiscard]] bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) noexcept { g->waiting = h; }
      void await_resume() const noexcept {}
    };
    return awaiter{this};
  }

  void open() { std::exchange(waiting, {}).resume(); }
};

task<std::string> after(gate& g, std::string text) {
  co_await g.wait();
  co_return text;
}

task<std::string> nested(gate& g, int depth) {
  if (depth == 0)
    co_return co_await after(g, "x");
  co_return co_await nested(g, depth - 1) + "y";
}

task<int> throws() {
  throw std::runtime_error("boom");
  co_return 0;
}

task<std::string> catches() {
  try {
    co_await throws();
  } catch (const std::exception& ex) {
    co_return std::string{"caught "} + ex.what();
  }
  co_return "not thrown";
}

struct counted {
  int* count;
  explicit counted(int* c) : count(c) {}
  ~counted() { ++*count; }
};

task<void> holds(gate& g, int* destroyed) {
  counted a{destroyed};
  co_await [](gate& gg, int* d) -> task<void> {
    counted b{d};
    co_await gg.wait();
  }(g, destroyed);
}

} // namespace

TEST_CASE("a million child tasks that end at once run in constant stack") {
  // Sanitizer builds are -O1: no tail call carries this, the start handshake does.
  auto t = sum_of_ones(1'000'000);
  start(t);
  REQUIRE(t.done());
  CHECK(std::move(t).operator co_await().await_resume() == 1'000'000);
}

TEST_CASE("a task that waits resumes its awaiters when it ends") {
  gate g;
  auto t = nested(g, 50);
  start(t);
  CHECK_FALSE(t.done());
  REQUIRE(g.waiting);
  g.open();
  REQUIRE(t.done());
  CHECK(std::move(t).operator co_await().await_resume()
        == "x" + std::string(50, 'y'));
}

TEST_CASE("what a child throws is thrown again by the co_await awaiting it") {
  auto t = catches();
  start(t);
  REQUIRE(t.done());
  CHECK(std::move(t).operator co_await().await_resume() == "caught boom");
}

TEST_CASE("what a root task throws is kept for its owner") {
  auto t = throws();
  start(t);
  REQUIRE(t.done());
  CHECK(t.handle().promise().error() != nullptr);
  CHECK_THROWS_AS(std::move(t).operator co_await().await_resume(),
                  std::runtime_error);
}

TEST_CASE("destroying a waiting task destroys the tasks it awaits") {
  gate g;
  int destroyed = 0;
  {
    auto t = holds(g, &destroyed);
    start(t);
    CHECK_FALSE(t.done());
    CHECK(destroyed == 0);
  }
  CHECK(destroyed == 2);
}

TEST_CASE("a task moves, and an empty task is not valid") {
  auto t = one();
  CHECK(t.valid());
  task<int> u = std::move(t);
  CHECK_FALSE(t.valid()); // NOLINT(bugprone-use-after-move)
  CHECK(u.valid());
  start(u);
  CHECK(u.done());
}

task<int> awaits_moved_from() {
  auto t = one();
  auto u = std::move(t);
  // NOLINTNEXTLINE(bugprone-use-after-move)
  co_return co_await std::move(t) + co_await std::move(u);
}

TEST_CASE("awaiting an empty task throws instead of running nothing") {
  auto t = awaits_moved_from();
  start(t);
  REQUIRE(t.done());
  CHECK_THROWS_AS(std::move(t).operator co_await().await_resume(),
                  std::logic_error);
}
