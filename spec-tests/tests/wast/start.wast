;; Kiln's own start-function tests: the start function runs once, after data
;; and element segments are in place, and a trap in it fails instantiation.

(module $S
  (memory 1)
  (data (i32.const 0) "\05\00\00\00")
  (global $g (mut i32) (i32.const 0))
  (global $runs (mut i32) (i32.const 0))
  (table 2 funcref)
  (elem (i32.const 1) func $seventeen)
  (func $seventeen (result i32) (i32.const 17))
  (func $start
    (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
    ;; The data segment is already there: g = mem[0] * 10 = 50
    (global.set $g (i32.mul (i32.load (i32.const 0)) (i32.const 10)))
    ;; So is the element segment: mem[4] = table[1]() = 17
    (i32.store (i32.const 4) (call_indirect (result i32) (i32.const 1)))
    (i64.store (i32.const 8) (i64.const 0x1122334455667788))
    (call $helper))
  (func $helper (i32.store8 (i32.const 100) (i32.const 0xab)))
  (start $start)
  (func (export "g") (result i32) (global.get $g))
  (func (export "runs") (result i32) (global.get $runs))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "load64") (param i32) (result i64) (i64.load (local.get 0)))
)

(assert_return (invoke $S "g") (i32.const 50))
(assert_return (invoke $S "runs") (i32.const 1))
(assert_return (invoke $S "load" (i32.const 0)) (i32.const 5))
(assert_return (invoke $S "load" (i32.const 4)) (i32.const 17))
(assert_return (invoke $S "load64" (i32.const 8)) (i64.const 0x1122334455667788))
(assert_return (invoke $S "load" (i32.const 100)) (i32.const 0xab))
(assert_return (invoke $S "runs") (i32.const 1))

;; A module whose state an importer's start function changes.
(module $Counter
  (global $n (mut i32) (i32.const 0))
  (memory (export "mem") 1)
  (func (export "inc") (global.set $n (i32.add (global.get $n) (i32.const 1))))
  (func (export "get") (result i32) (global.get $n))
  (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0)))
)
(register "Counter" $Counter)

;; An imported function can itself be the start function.
(module $Direct
  (import "Counter" "inc" (func $inc))
  (start $inc)
)
(assert_return (invoke $Counter "get") (i32.const 1))

(module $Twice
  (import "Counter" "inc" (func $inc))
  (import "Counter" "mem" (memory 1))
  (func $main (call $inc) (call $inc) (i32.store8 (i32.const 3) (i32.const 9)))
  (start $main)
)
(assert_return (invoke $Counter "get") (i32.const 3))
(assert_return (invoke $Counter "peek" (i32.const 3)) (i32.const 9))

;; Traps in the start function make instantiation fail with that trap.
(assert_trap
  (module (func $s (unreachable)) (start $s))
  "unreachable")
(assert_trap
  (module (memory 1) (func $s (drop (i32.load (i32.const 65536)))) (start $s))
  "out of bounds memory access")
(assert_trap
  (module
    (func $s (drop (call $div (i32.const 1) (i32.const 0))))
    (func $div (param i32 i32) (result i32) (i32.div_u (local.get 0) (local.get 1)))
    (start $s))
  "integer divide by zero")
(assert_trap
  (module
    (table 1 funcref)
    (func $s (call_indirect (i32.const 0)))
    (start $s))
  "uninitialized element")

;; Effects on imported state made before the trap are not undone.
(assert_trap
  (module
    (import "Counter" "inc" (func $inc))
    (import "Counter" "mem" (memory 1))
    (func $s
      (call $inc)
      (i32.store8 (i32.const 7) (i32.const 0x5a))
      (unreachable)
      (call $inc))
    (start $s))
  "unreachable")
(assert_return (invoke $Counter "get") (i32.const 4))
(assert_return (invoke $Counter "peek" (i32.const 7)) (i32.const 0x5a))
