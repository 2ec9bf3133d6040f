;; Kiln's own linking tests: one module's function, memory, table and globals
;; imported and used by another, in both directions, plus link-time failures.

(module $A
  (type $i_i (func (param i32) (result i32)))
  (memory (export "mem") 1 2)
  (table $tab (export "tab") 4 funcref)
  (elem (table $tab) (i32.const 0) func $add1 $neg)
  (global (export "base") i32 (i32.const 32))
  (global $mg (export "mg") (mut i64) (i64.const 5))
  (func $add (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func $add1 (type $i_i) (i32.add (local.get 0) (i32.const 1)))
  (func $neg (type $i_i) (i32.sub (i32.const 0) (local.get 0)))
  (func (export "write") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "read") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  (func (export "call") (param i32 i32) (result i32)
    (call_indirect $tab (type $i_i) (local.get 1) (local.get 0)))
  (func (export "get_mg") (result i64) (global.get $mg))
)
(register "A" $A)

(module $B
  (type $i_i (func (param i32) (result i32)))
  (import "A" "add" (func $add (param i32 i32) (result i32)))
  (import "A" "mem" (memory 1))
  (import "A" "tab" (table $tab 2 funcref))
  (import "A" "base" (global $base i32))
  (import "A" "mg" (global $mg (mut i64)))
  ;; Segments placed at an imported global's value, into the imported memory and table.
  (data (global.get $base) "\2a\00\00\00")
  (elem (table $tab) (i32.const 2) func $times3)
  (func $times3 (type $i_i) (i32.mul (local.get 0) (i32.const 3)))
  (func (export "call_add") (param i32 i32) (result i32) (call $add (local.get 0) (local.get 1)))
  (func (export "read") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "write") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "call") (param i32 i32) (result i32)
    (call_indirect $tab (type $i_i) (local.get 1) (local.get 0)))
  (func (export "base") (result i32) (global.get $base))
  (func (export "bump_mg") (result i64)
    (global.set $mg (i64.mul (global.get $mg) (i64.const 3)))
    (global.get $mg))
)

;; Calling A's function
(assert_return (invoke $B "call_add" (i32.const 40) (i32.const 2)) (i32.const 42))
(assert_return (invoke $B "call_add" (i32.const -1) (i32.const 1)) (i32.const 0))

;; Sharing A's memory: B's data segment landed in it, and writes go both ways
(assert_return (invoke $A "read" (i32.const 32)) (i32.const 42))
(invoke $A "write" (i32.const 100) (i32.const 0xcafe))
(assert_return (invoke $B "read" (i32.const 100)) (i32.const 0xcafe))
(invoke $B "write" (i32.const 200) (i32.const -7))
(assert_return (invoke $A "read" (i32.const 200)) (i32.const -7))
(assert_trap (invoke $B "read" (i32.const 65536)) "out of bounds memory access")
(assert_return (invoke $B "grow" (i32.const 1)) (i32.const 1))
(assert_return (invoke $A "size") (i32.const 2))
(invoke $A "write" (i32.const 70000) (i32.const 77))
(assert_return (invoke $B "read" (i32.const 70000)) (i32.const 77))
(assert_return (invoke $B "grow" (i32.const 1)) (i32.const -1))

;; Sharing A's table: each module calls the other's functions through it
(assert_return (invoke $B "call" (i32.const 0) (i32.const 41)) (i32.const 42))
(assert_return (invoke $B "call" (i32.const 1) (i32.const 5)) (i32.const -5))
(assert_return (invoke $A "call" (i32.const 2) (i32.const 14)) (i32.const 42))
(assert_return (invoke $B "call" (i32.const 2) (i32.const 14)) (i32.const 42))
(assert_trap (invoke $A "call" (i32.const 3) (i32.const 0)) "uninitialized element")
(assert_trap (invoke $B "call" (i32.const 4) (i32.const 0)) "undefined element")

;; Globals: the immutable one reads the same, the mutable one is shared
(assert_return (invoke $B "base") (i32.const 32))
(assert_return (invoke $B "bump_mg") (i64.const 15))
(assert_return (invoke $A "get_mg") (i64.const 15))
(assert_return (get $A "mg") (i64.const 15))

;; Segments applied before a failing one stay applied, even though the
;; instance never came to be: slot 3 now holds this module's function.
(assert_trap
  (module
    (import "A" "tab" (table 4 funcref))
    (import "A" "mem" (memory 1))
    (func $nine (param i32) (result i32) (i32.const 9))
    (elem (i32.const 3) func $nine)
    (data (i32.const 0x1fffe) "abc"))
  "out of bounds memory access")
(assert_return (invoke $A "call" (i32.const 3) (i32.const 0)) (i32.const 9))

;; Import descriptions that do not match what A exports
(assert_unlinkable
  (module (import "A" "add" (func (param i32) (result i32))))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "add" (func (param i64 i64) (result i64))))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "base" (global i64)))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "base" (global (mut i32))))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "mg" (global i64)))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "mem" (memory 3)))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "mem" (memory 1 1)))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "tab" (table 5 funcref)))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "add" (global i32)))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "mem" (func)))
  "incompatible import type")
(assert_unlinkable
  (module (import "A" "nope" (func)))
  "unknown import")
