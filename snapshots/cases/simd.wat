;; SIMD on the SSE4.2 baseline: lane arithmetic, a shuffle, and a v128 load and store.
(module
  (memory 1)
  (func (export "i32x4_add") (param v128 v128) (result v128)
    (i32x4.add (local.get 0) (local.get 1)))
  (func (export "f32x4_mul_shuffle") (param v128 v128) (result v128)
    (i8x16.shuffle 0 1 2 3 20 21 22 23 8 9 10 11 28 29 30 31
      (f32x4.mul (local.get 0) (local.get 1))
      (local.get 1)))
  (func (export "copy_v128") (param i32 i32)
    (v128.store (local.get 1) (v128.load (local.get 0)))))
