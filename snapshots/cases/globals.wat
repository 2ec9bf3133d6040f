;; The module's own globals live inside the VM context: one load or store at a fixed offset.
(module
  (global $counter (mut i32) (i32.const 0))
  (global $scale f64 (f64.const 2.5))
  (func (export "bump") (result i32)
    (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
    (global.get $counter))
  (func (export "scale") (param f64) (result f64)
    (f64.mul (local.get 0) (global.get $scale))))
