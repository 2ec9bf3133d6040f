;; Kiln's own call tests: direct calls, recursion, mutual recursion,
;; call_indirect through a table (and its three traps), stack exhaustion.

(module
  (type $i_i (func (param i32) (result i32)))
  (type $i_i_again (func (param i32) (result i32)))  ;; structurally the same as $i_i
  (type $v_i (func (result i32)))
  (type $i_l (func (param i32) (result i64)))

  (table $t 8 funcref)
  (elem (table $t) (i32.const 0) func $inc $double $seven $widen)
  (elem (table $t) (i32.const 5) func $dup_type)
  ;; slots 4, 6 and 7 stay null

  (func $inc (type $i_i) (i32.add (local.get 0) (i32.const 1)))
  (func $double (type $i_i) (i32.mul (local.get 0) (i32.const 2)))
  (func $seven (type $v_i) (i32.const 7))
  (func $widen (type $i_l) (i64.extend_i32_s (local.get 0)))
  (func $dup_type (type $i_i_again) (i32.sub (i32.const 0) (local.get 0)))

  (func (export "call_i_i") (param $slot i32) (param $x i32) (result i32)
    (call_indirect $t (type $i_i) (local.get $x) (local.get $slot)))
  (func (export "call_v_i") (param $slot i32) (result i32)
    (call_indirect $t (type $v_i) (local.get $slot)))
  (func (export "call_i_l") (param $slot i32) (param $x i32) (result i64)
    (call_indirect $t (type $i_l) (local.get $x) (local.get $slot)))

  ;; Direct calls, including one with many mixed-type parameters.
  (func $mix (param i32 i64 f32 f64 i32 i64 f32 f64 i32 i64) (result f64)
    (f64.add
      (f64.add
        (f64.add (f64.convert_i32_s (local.get 0)) (f64.convert_i64_s (local.get 1)))
        (f64.add (f64.promote_f32 (local.get 2)) (local.get 3)))
      (f64.add
        (f64.add (f64.convert_i32_s (local.get 4)) (f64.convert_i64_s (local.get 5)))
        (f64.add
          (f64.add (f64.promote_f32 (local.get 6)) (local.get 7))
          (f64.add (f64.convert_i32_s (local.get 8)) (f64.convert_i64_s (local.get 9)))))))
  (func (export "mix") (result f64)
    (call $mix (i32.const 1) (i64.const 2) (f32.const 3.5) (f64.const 4.25)
               (i32.const -5) (i64.const 6) (f32.const 7) (f64.const 8)
               (i32.const 9) (i64.const 10)))
  (func (export "twice_inc") (param i32) (result i32)
    (call $inc (call $inc (local.get 0))))

  ;; Recursion
  (func $fac (export "fac") (param i64) (result i64)
    (if (result i64) (i64.le_u (local.get 0) (i64.const 1))
      (then (i64.const 1))
      (else (i64.mul (local.get 0) (call $fac (i64.sub (local.get 0) (i64.const 1)))))))
  (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func $even (export "even") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 1))
      (else (call $odd (i32.sub (local.get 0) (i32.const 1))))))
  (func $odd (export "odd") (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (call $even (i32.sub (local.get 0) (i32.const 1))))))

  ;; Unbounded recursion, directly and through the table.
  (func $forever (export "forever") (call $forever))
  (func $forever_args (export "forever_args") (param i64 f64) (result i64)
    (i64.add (local.get 0)
      (call $forever_args (i64.add (local.get 0) (i64.const 1)) (local.get 1))))
  (elem (table $t) (i32.const 7) func $forever_indirect)
  (func $forever_indirect (type $i_i)
    (i32.add (i32.const 1) (call_indirect $t (type $i_i) (local.get 0) (i32.const 7))))
  (func (export "forever_indirect") (result i32) (call $forever_indirect (i32.const 0)))
)

;; call_indirect
(assert_return (invoke "call_i_i" (i32.const 0) (i32.const 41)) (i32.const 42))
(assert_return (invoke "call_i_i" (i32.const 1) (i32.const 21)) (i32.const 42))
(assert_return (invoke "call_v_i" (i32.const 2)) (i32.const 7))
(assert_return (invoke "call_i_l" (i32.const 3) (i32.const -1)) (i64.const -1))
(assert_return (invoke "call_i_i" (i32.const 5) (i32.const 9)) (i32.const -9))
(assert_trap (invoke "call_i_i" (i32.const 2) (i32.const 0)) "indirect call type mismatch")
(assert_trap (invoke "call_i_i" (i32.const 3) (i32.const 0)) "indirect call type mismatch")
(assert_trap (invoke "call_v_i" (i32.const 0)) "indirect call type mismatch")
(assert_trap (invoke "call_i_l" (i32.const 1) (i32.const 0)) "indirect call type mismatch")
(assert_trap (invoke "call_i_i" (i32.const 4) (i32.const 0)) "uninitialized element")
(assert_trap (invoke "call_v_i" (i32.const 6)) "uninitialized element")
(assert_trap (invoke "call_i_i" (i32.const 8) (i32.const 0)) "undefined element")
(assert_trap (invoke "call_v_i" (i32.const 0x7fffffff)) "undefined element")
(assert_trap (invoke "call_i_i" (i32.const -1) (i32.const 0)) "undefined element")

;; Direct calls and recursion
(assert_return (invoke "mix") (f64.const 45.75))
(assert_return (invoke "twice_inc" (i32.const 40)) (i32.const 42))
(assert_return (invoke "fac" (i64.const 0)) (i64.const 1))
(assert_return (invoke "fac" (i64.const 5)) (i64.const 120))
(assert_return (invoke "fac" (i64.const 20)) (i64.const 2432902008176640000))
(assert_return (invoke "fac" (i64.const 25)) (i64.const 7034535277573963776))
(assert_return (invoke "fib" (i32.const 0)) (i32.const 0))
(assert_return (invoke "fib" (i32.const 1)) (i32.const 1))
(assert_return (invoke "fib" (i32.const 20)) (i32.const 6765))
(assert_return (invoke "even" (i32.const 100)) (i32.const 1))
(assert_return (invoke "odd" (i32.const 100)) (i32.const 0))
(assert_return (invoke "even" (i32.const 77)) (i32.const 0))
(assert_return (invoke "odd" (i32.const 77)) (i32.const 1))
(assert_return (invoke "even" (i32.const 1000)) (i32.const 1))

;; Stack exhaustion is a trap like any other; the instance stays usable.
(assert_exhaustion (invoke "forever") "call stack exhausted")
(assert_exhaustion (invoke "forever_args" (i64.const 0) (f64.const 1)) "call stack exhausted")
(assert_exhaustion (invoke "forever_indirect") "call stack exhausted")
(assert_return (invoke "fac" (i64.const 10)) (i64.const 3628800))
(assert_return (invoke "call_i_i" (i32.const 0) (i32.const 1)) (i32.const 2))
