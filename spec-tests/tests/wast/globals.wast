;; Kiln's own global tests: immutable and mutable globals of every number
;; type, global.get/set, exported globals and initialisers reading imports.

(module $G
  (global (export "g_i32") i32 (i32.const 42))
  (global (export "g_i64") i64 (i64.const -0x123456789))
  (global (export "g_f32") f32 (f32.const 1.5))
  (global (export "g_f64") f64 (f64.const -0x1p-1074))
  (global $counter (export "counter") (mut i32) (i32.const 100))
  (func (export "get_counter") (result i32) (global.get $counter))
  (func (export "bump") (result i32)
    (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
    (global.get $counter))
)
(register "G" $G)

(assert_return (get $G "g_i32") (i32.const 42))
(assert_return (get $G "g_i64") (i64.const -0x123456789))
(assert_return (get $G "counter") (i32.const 100))
(assert_return (invoke $G "bump") (i32.const 101))
(assert_return (get $G "counter") (i32.const 101))

(module $U
  (import "G" "g_i32" (global $gi i32))
  (import "G" "g_i64" (global $gl i64))
  (import "G" "g_f32" (global $gf f32))
  (import "G" "g_f64" (global $gd f64))
  (import "G" "counter" (global $counter (mut i32)))

  ;; Initialisers may read imported immutable globals.
  (global $copy_i32 i32 (global.get $gi))
  (global $copy_f64 f64 (global.get $gd))
  (global $m_i32 (mut i32) (global.get $gi))
  (global $m_i64 (mut i64) (global.get $gl))
  (global $m_f32 (mut f32) (global.get $gf))
  (global $m_f64 (mut f64) (f64.const -0))
  (global $imm_neg i32 (i32.const -7))

  (func (export "imports") (result i32 i64 f32 f64)
    (global.get $gi) (global.get $gl) (global.get $gf) (global.get $gd))
  (func (export "copies") (result i32 f64) (global.get $copy_i32) (global.get $copy_f64))
  (func (export "imm_neg") (result i32) (global.get $imm_neg))

  (func (export "get_i32") (result i32) (global.get $m_i32))
  (func (export "set_i32") (param i32) (global.set $m_i32 (local.get 0)))
  (func (export "get_i64") (result i64) (global.get $m_i64))
  (func (export "set_i64") (param i64) (global.set $m_i64 (local.get 0)))
  (func (export "get_f32") (result f32) (global.get $m_f32))
  (func (export "set_f32") (param f32) (global.set $m_f32 (local.get 0)))
  (func (export "get_f64") (result f64) (global.get $m_f64))
  (func (export "set_f64") (param f64) (global.set $m_f64 (local.get 0)))
  ;; NaN payloads survive a trip through a float global.
  (func (export "f32_bits_via_global") (param i32) (result i32)
    (global.set $m_f32 (f32.reinterpret_i32 (local.get 0)))
    (i32.reinterpret_f32 (global.get $m_f32)))
  (func (export "f64_bits_via_global") (param i64) (result i64)
    (global.set $m_f64 (f64.reinterpret_i64 (local.get 0)))
    (i64.reinterpret_f64 (global.get $m_f64)))
  ;; Accumulate in a global across a loop.
  (func (export "sum_to") (param $n i32) (result i64)
    (global.set $m_i64 (i64.const 0))
    (block $done
      (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (global.set $m_i64 (i64.add (global.get $m_i64) (i64.extend_i32_u (local.get $n))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
    (global.get $m_i64))
  ;; The imported mutable global is shared with $G.
  (func (export "get_counter") (result i32) (global.get $counter))
  (func (export "set_counter") (param i32) (global.set $counter (local.get 0)))
)

(assert_return (invoke $U "imports")
  (i32.const 42) (i64.const -0x123456789) (f32.const 1.5) (f64.const -0x1p-1074))
(assert_return (invoke $U "copies") (i32.const 42) (f64.const -0x1p-1074))
(assert_return (invoke $U "imm_neg") (i32.const -7))

;; Mutable globals start at their initialiser and keep what is stored.
(assert_return (invoke $U "get_i32") (i32.const 42))
(invoke $U "set_i32" (i32.const -1))
(assert_return (invoke $U "get_i32") (i32.const -1))
(assert_return (invoke $U "copies") (i32.const 42) (f64.const -0x1p-1074))
(assert_return (invoke $U "get_i64") (i64.const -0x123456789))
(invoke $U "set_i64" (i64.const 0x7fffffffffffffff))
(assert_return (invoke $U "get_i64") (i64.const 0x7fffffffffffffff))
(assert_return (invoke $U "get_f32") (f32.const 1.5))
(invoke $U "set_f32" (f32.const -inf))
(assert_return (invoke $U "get_f32") (f32.const -inf))
(assert_return (invoke $U "get_f64") (f64.const -0))
(invoke $U "set_f64" (f64.const 0x1.fffffffffffffp+1023))
(assert_return (invoke $U "get_f64") (f64.const 0x1.fffffffffffffp+1023))
(assert_return (invoke $U "f32_bits_via_global" (i32.const 0x7f800001)) (i32.const 0x7f800001))
(assert_return (invoke $U "f32_bits_via_global" (i32.const 0xffc12345)) (i32.const 0xffc12345))
(assert_return (invoke $U "f64_bits_via_global" (i64.const 0x7ff0000000000001)) (i64.const 0x7ff0000000000001))
(assert_return (invoke $U "sum_to" (i32.const 100000)) (i64.const 5000050000))
(assert_return (invoke $U "get_i64") (i64.const 5000050000))

;; Writes through either module are seen by both.
(assert_return (invoke $U "get_counter") (i32.const 101))
(invoke $U "set_counter" (i32.const 7))
(assert_return (invoke $G "get_counter") (i32.const 7))
(assert_return (invoke $G "bump") (i32.const 8))
(assert_return (invoke $U "get_counter") (i32.const 8))
(assert_return (get $G "counter") (i32.const 8))

;; The exporter's immutable globals are unchanged by all of the above.
(assert_return (get $G "g_i32") (i32.const 42))
(assert_return (get $G "g_f32") (f32.const 1.5))

;; A second importer gets its own copies initialised from the same imports.
(module $V
  (import "G" "g_i32" (global $gi i32))
  (global $twice (mut i32) (global.get $gi))
  (func (export "twice") (result i32)
    (global.set $twice (i32.add (global.get $twice) (global.get $gi)))
    (global.get $twice))
)
(assert_return (invoke $V "twice") (i32.const 84))
(assert_return (invoke $V "twice") (i32.const 126))
(assert_return (invoke $U "get_i32") (i32.const -1))
