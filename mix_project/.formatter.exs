[
  inputs: ["{mix,.formatter}.exs", "{build,config,lib,test}/**/*.{ex,exs}"]
]
