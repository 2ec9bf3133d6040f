;; Every store width to a 32-bit memory: like loads, no bounds checks, only trap-table entries;
;; the stores through one pointer share the first one's dirty mark (it reaches them all), and so
;; do stores at that pointer plus a small constant (an unrolled memset), unless out of its reach.
(module
  (memory 1)
  (func (export "store_i32_widths") (param i32 i32)
    (i32.store8 (local.get 0) (local.get 1))
    (i32.store16 offset=2 (local.get 0) (local.get 1))
    (i32.store offset=4 (local.get 0) (local.get 1)))
  (func (export "store_other_widths") (param i32 i64 f32 f64)
    (i64.store8 (local.get 0) (local.get 1))
    (i64.store16 offset=2 (local.get 0) (local.get 1))
    (i64.store32 offset=4 (local.get 0) (local.get 1))
    (i64.store offset=8 (local.get 0) (local.get 1))
    (f32.store offset=16 (local.get 0) (local.get 2))
    (f64.store offset=24 (local.get 0) (local.get 3)))
  (func (export "store_unrolled") (param i32 i64)
    (i64.store (local.get 0) (local.get 1))
    (i64.store (i32.add (local.get 0) (i32.const 24)) (local.get 1))
    (i64.store (i32.add (local.get 0) (i32.const 16)) (local.get 1))
    (i64.store (i32.add (local.get 0) (i32.const 8)) (local.get 1))
    (i64.store (i32.add (local.get 0) (i32.const 60)) (local.get 1))))
