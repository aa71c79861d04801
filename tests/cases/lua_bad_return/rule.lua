return "download everything"
