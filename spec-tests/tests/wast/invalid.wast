;; Kiln's own rejection tests: modules that must fail validation
;; (assert_invalid) or must not even parse/decode (assert_malformed).

;; A valid baseline, so a rejecting-everything implementation cannot pass.
(module
  (memory 1)
  (func (export "ok") (param i32) (result i32)
    (i32.add (local.get 0) (i32.load (i32.const 0)))))
(assert_return (invoke "ok" (i32.const 3)) (i32.const 3))

;; Type mismatches
(assert_invalid
  (module (func (result i32) (i64.const 0)))
  "type mismatch")
(assert_invalid
  (module (func (drop (i32.add (i32.const 0) (f32.const 0)))))
  "type mismatch")
(assert_invalid
  (module (func (result i32)))
  "type mismatch")
(assert_invalid
  (module (func (i32.const 1)))
  "type mismatch")
(assert_invalid
  (module (func (result i32) (if (result i32) (i32.const 1) (then (i32.const 1)))))
  "type mismatch")
(assert_invalid
  (module (func (result i32) (block (result i32) (i32.const 1) (i32.const 2))))
  "type mismatch")
(assert_invalid
  (module (func (result i32) (select (i32.const 1) (i64.const 2) (i32.const 0))))
  "type mismatch")
(assert_invalid
  (module (func (param f64) (drop (i64.eqz (local.get 0)))))
  "type mismatch")
(assert_invalid
  (module (func (block (br_table 0 2 (i32.const 0)))))
  "unknown label")
(assert_invalid
  (module (func (block (result i32) (block (br_table 0 1 (i32.const 5) (i32.const 0)))) (drop)))
  "type mismatch")
(assert_invalid
  (module (func $f (param i32) (result i32) (call $f (i64.const 1))))
  "type mismatch")

;; Unknown indices
(assert_invalid
  (module (func (param i32) (result i32) (local.get 1)))
  "unknown local")
(assert_invalid
  (module (func (local i64) (local.set 2 (i64.const 0))))
  "unknown local")
(assert_invalid
  (module (func (call 5)))
  "unknown function")
(assert_invalid
  (module (func) (export "f" (func 1)))
  "unknown function")
(assert_invalid
  (module (func (br 1)))
  "unknown label")
(assert_invalid
  (module (func (drop (global.get 0))))
  "unknown global")
(assert_invalid
  (module (func (drop (i32.load (i32.const 0)))))
  "unknown memory")
(assert_invalid
  (module (func (call_indirect (i32.const 0))))
  "unknown table")

;; Other validation rules
(assert_invalid
  (module (global i32 (i32.const 0)) (func (global.set 0 (i32.const 1))))
  "global is immutable")
(assert_invalid
  (module (func $f (param i32)) (start $f))
  "start function")
(assert_invalid
  (module (func) (export "f" (func 0)) (export "f" (func 0)))
  "duplicate export name")
(assert_invalid
  (module (memory 1) (func (drop (i32.load align=8 (i32.const 0)))))
  "alignment must not be larger than natural")
(assert_invalid
  (module (memory 65537))
  "memory size must be at most 65536 pages (4GiB)")
(assert_invalid
  (module (memory 2 1))
  "size minimum must not be greater than maximum")

;; Text that is not a module at all
(assert_malformed
  (module quote "(func (i32.add1 (i32.const 1) (i32.const 2)))")
  "unknown operator")
(assert_malformed
  (module quote "(func (drop (i32.const 0x100000000)))")
  "constant out of range")
(assert_malformed
  (module quote "(func (drop (i64.const 12ab)))")
  "unknown operator")
(assert_malformed
  (module quote "(func $f) (func $f)")
  "duplicate func")
(assert_malformed
  (module quote "(func (local.get $nowhere))")
  "unknown local")
(assert_malformed
  (module quote "(func (result i32) (i32.const 1)")
  "unexpected token")
(assert_malformed
  (module quote "(func) (garbage)")
  "unexpected token")

;; Bytes that are not a module at all
(assert_malformed
  (module binary "")
  "unexpected end")
(assert_malformed
  (module binary "\00bsm\01\00\00\00")
  "magic header not detected")
(assert_malformed
  (module binary "\00asm\02\00\00\00")
  "unknown binary version")
(assert_malformed
  (module binary "\00asm\01\00\00")
  "unexpected end")
